"""The model card's De-identification section is written from validate's `deidentification` block."""

from components.core.registry import modelcard


def section(validation: dict | None) -> str:
    card = modelcard.render(name="m", metrics={"classes": ["NORMAL", "PNEUMONIA"]}, train={}, params={},
                            validation=validation)
    return card.split("## De-identification", 1)[1].split("\n## ", 1)[0]


def test_dicom_audit_counts_and_attribute_names():
    text = section({"deidentification": {
        "policy": "report", "dicom_files": 24, "files_with_identifying_attributes": 24,
        "identifying_attributes": {"PatientID": 24, "PatientName": 24, "StudyDate": 3},
        "burned_in_annotation_yes": 2, "files_with_private_tags": 5}})
    assert "DICOM files: 24" in text and "24 of 24" in text
    assert "`PatientID` (24), `PatientName` (24), `StudyDate` (3)" in text
    assert "BurnedInAnnotation = YES: 2 files" in text and "private tags: 5" in text
    assert "`report`" in text and "validate.phi: quarantine" in text
    assert "refused" not in text  # DICOM is accepted: the old text said otherwise


def test_quarantine_policy_clean_files_pixel_formats_and_no_audit():
    clean = section({"deidentification": {"policy": "quarantine", "dicom_files": 3,
                                          "files_with_identifying_attributes": 0, "identifying_attributes": {},
                                          "burned_in_annotation_yes": 0, "files_with_private_tags": 0}})
    assert "0 of 3" in clean and "refused by validation" in clean and "still in the files" not in clean
    pixels = section({"deidentification": {"policy": "report", "dicom_files": 0}})
    assert "DICOM files: 0" in pixels and "pixel formats" in pixels
    assert "Not audited" in section({}) and "Not audited" in section(None)
