"""The model card's sections written from the reports: De-identification (validate's `deidentification` block), the
gate table (gate.json), ECE with its calibrated reference."""

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


def test_gate_section_reads_min_power_and_the_patients_range_from_the_report():
    check = {"check": "accuracy: candidate - champion, lower CI bound > -0.02", "kind": "non_inferiority",
             "metric": "accuracy", "value": 0.0, "ci": [-0.15, 0.15], "margin": 0.02, "patients": 24,
             "count": "patients", "power": 0.01, "patients_needed": 1384, "patients_needed_range": [194, 9634],
             "status": "inconclusive", "passed": True}
    gate = {"passed": True, "decision": "inconclusive", "checks": [check], "min_power": 0.9,
            "champion": {"exists": True, "version": "1"}, "intervals": {"level": 0.95},
            "comparison": {"status": "compared", "patients_used": 24, "patients_total": 24, "joint_power": 0.01,
                           "min_power": 0.9}}
    text = "\n".join(modelcard.gate_section(gate))
    assert "less than 90% power" in text and "(here: 1%)" in text and "80%" not in text
    assert "0.01 (≈1,384, 194–9,634 patients)" in text


def test_ece_is_shown_with_what_a_calibrated_model_would_show():
    entry = {"point": 0.08, "calibrated_reference": {"median": 0.06, "high": 0.11, "level": 0.95, "draws": 400}}
    assert modelcard._ece_reference(entry) == " (a calibrated model: ≈0.060, ≤ 0.110 in 95%)"
    assert modelcard._ece_reference({"point": 0.1, "low": 0.05, "high": 0.2}) == " (0.050–0.200)"  # older reports
