"""DICOM through the one decoder: windowing, refusals with named reasons, facts, the PHI audit."""

import numpy as np
import pytest

from components.core.data import dicom, images
from tests import imagegen as g

pytest.importorskip("pydicom")

PA = g.deep(40, 48)  # uint16 values 1000..3000


def facts(data: bytes) -> images.ImageFacts:
    return images.inspect_bytes(data)


def test_plain_dicom_decodes_with_its_facts():
    f = facts(g.dicom(PA, patient_id="MRN-0042"))
    assert f.decodable and f.format == "DICOM" and (f.width, f.height) == (40, 48)
    assert (f.mode, f.bit_depth, f.channels) == ("MONOCHROME2", 16, 1)
    assert (f.modality, f.view_position, f.manufacturer) == ("DX", "PA", "ACME Imaging")
    assert f.study_uid.endswith(".498.1") and f.series_uid.endswith(".498.1.2")
    assert f.pixel_spacing == "0.143 x 0.143" and f.transfer_syntax == "1.2.840.10008.1.2.1"
    assert f.dicom_patient_id == "MRN-0042" and f.dicom_patient_digest == dicom.patient_digest("MRN-0042")
    assert len(f.dicom_patient_digest) == 16 and "MRN" not in f.dicom_patient_digest
    assert f.window == "percentile_0.5_99.5"  # no window in the header: the robust window
    out = images.decode_gray(g.dicom(PA))
    assert out.shape == (48, 40) and np.corrcoef(out.ravel(), PA.ravel())[0, 1] > 0.99


def test_header_window_is_used():
    out = images.decode_gray(g.dicom(PA, window=(2000, 1000)))  # 1500..2500 → 0..255
    assert facts(g.dicom(PA, window=(2000, 1000))).window == "dicom_window"
    assert (out[PA <= 1500] == 0).all() and (out[PA >= 2500] == 255).all()
    linear = np.clip((PA - 1999.5) / 999 + 0.5, 0, 1) * 255  # DICOM PS3.3 C.11.2.1.2.1, LINEAR
    assert np.abs(out - linear).max() <= 1


def test_modality_lut_before_the_window():
    # stored 1000..3000, slope 2, intercept -4000 → -2000..2000; window centre 0 width 2000 → -1000..1000
    out = images.decode_gray(g.dicom(PA, slope=2.0, intercept=-4000, window=(0, 2000)))
    rescaled = PA.astype(float) * 2 - 4000
    assert (out[rescaled <= -1000] == 0).all() and (out[rescaled >= 1000] == 255).all()


def test_monochrome1_is_inverted():
    m1, m2 = g.dicom(PA, photometric="MONOCHROME1"), g.dicom(PA)
    assert np.array_equal(images.decode_gray(m1), 255 - images.decode_gray(m2))
    assert facts(m1).window.endswith("+inverted")
    windowed = images.decode_gray(g.dicom(PA, photometric="MONOCHROME1", window=(2000, 1000)))
    assert (windowed[PA >= 2500] == 0).all()  # high stored value = dark in MONOCHROME1


def test_signed_12_bit_in_16():
    values = np.linspace(-2048, 2047, 40 * 48).reshape(48, 40).astype(np.int16)
    stored = (values.astype(np.int32) & 0x0FFF).astype(np.uint16)  # 12 bits, not sign-extended on disk
    data = g.dicom(stored, bits_stored=12, signed=True, window=(0, 4096))
    out = images.decode_gray(data).astype(int)
    assert facts(data).bit_depth == 12
    assert out[0, 0] == 0 and out[-1, -1] == 255 and (np.diff(out.ravel()) >= 0).all()  # monotonic: signs right
    assert np.abs(out[np.abs(values) < 5] - 128).max() <= 1  # zero at the window centre


def test_8bit_dicom_is_kept_as_stored():
    arr = (PA // 16).astype(np.uint8)
    assert np.array_equal(images.decode_gray(g.dicom(arr)), arr)


def test_compressed_jpeg2000_decodes_losslessly():
    data = g.dicom_j2k(PA)
    f = facts(data)
    assert f.decodable and f.transfer_syntax == "1.2.840.10008.1.2.4.90"
    assert np.array_equal(images.decode_gray(data), images.decode_gray(g.dicom(PA)))


def test_jpeg_baseline_dicom_decodes():
    import io

    arr = (PA // 16).astype(np.uint8)
    out = images.decode_gray(g.dicom_jpeg(arr))
    assert out.shape == arr.shape and np.abs(out.astype(int) - arr).mean() < 3


@pytest.mark.parametrize(("data", "reason", "words"), [
    (g.dicom_with_syntax(PA, "1.2.840.10008.1.2.4.100"), "dicom_unsupported_transfer_syntax", "MPEG2 Main Profile"),
    (g.dicom(PA, frames=3), "dicom_multiframe", "3 frames"),
    (g.dicom(None), "dicom_no_pixels", "no Pixel Data"),
    (g.dicom(PA)[:-500], "truncated", "(7FE0,0010) (3340 of 3840 bytes)"),
    (g.dicom(PA)[:400], "truncated", "the file ends inside element (0008,0018)"),
])
def test_bad_dicoms_get_a_named_reason(data, reason, words):
    f = facts(data)
    assert not f.decodable and f.reason == reason and words in f.detail and f.format == "DICOM"
    with pytest.raises(images.ImageError) as err:
        images.load_for_model(data, 32, "crop")
    assert err.value.reason == reason


def test_missing_plugin_names_what_to_install(monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))  # as if pylibjpeg were absent
    f = facts(g.dicom_j2k(PA))
    assert f.reason == "dicom_unsupported_transfer_syntax"
    assert "JPEG 2000 Image Compression (Lossless Only)" in f.detail and "pylibjpeg-openjpeg" in f.detail


def test_dicom_too_large_is_refused_from_the_header():
    f = images.inspect_bytes(g.dicom(PA), max_pixels=1000)
    assert f.reason == "too_large" and (f.width, f.height) == (40, 48) and "1920 pixels > limit 1000" in f.detail


def test_dicom_renamed_png_and_bare_dataset(tmp_path):
    (tmp_path / "film.png").write_bytes(g.dicom(PA))
    assert images.inspect_file(tmp_path / "film.png").format == "DICOM"
    bare = g.dicom(PA, preamble=False)
    assert bare[128:132] != b"DICM"
    f = facts(bare)
    assert f.decodable and f.format == "DICOM" and f.view_position == "PA"
    assert np.array_equal(images.decode_gray(bare), images.decode_gray(g.dicom(PA)))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(g.dicom(PA))
    assert images.decode_files([str(tmp_path / "a" / "x.dcm")], 32, "crop")[0].shape == (32, 32)
    assert ".dcm" in images.IMAGE_SUFFIXES


def test_bytes_that_only_start_like_dicom_are_not_an_image():
    f = facts(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(200))  # a tag, then nothing image-like
    assert f.reason == "not_an_image"
    assert facts(b"\x08\x00" + b"\xff" * 300).reason in ("not_an_image", "unreadable_header")


# ---------------------------------------------------------------- de-identification audit
def test_audit_names_identifying_attributes_without_values():
    data = g.dicom(PA, patient_name="DOE^JANE", patient_id="MRN123", identifying=True, private=True,
                   burned_in="YES")
    a = dicom.audit_bytes(data)
    assert {"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "InstitutionName",
            "ReferringPhysicianName", "StudyDate", "StudyTime", "AccessionNumber", "StationName",
            "DeviceSerialNumber"} == set(a.present)
    assert a.count == 11 and a.burned_in_annotation == "YES" and a.private_tags == 2 and not a.clean
    text = repr(a) + repr(a.as_dict())
    assert "DOE" not in text and "MRN123" not in text and "Example Hospital" not in text
    f = facts(data)
    assert f.phi_count == 11 and "PatientName" in f.phi_attributes and f.private_tags == 2
    assert f.burned_in_annotation == "YES" and "DOE" not in f.phi_attributes


def test_audit_of_a_clean_file_and_empty_values():
    ds = g.dicom_dataset(PA, burned_in="NO")
    ds.PatientName = ""  # present but empty: the profile's "Z" action, not identifying
    a = dicom.audit(ds)
    assert a.present == () and a.burned_in_annotation == "NO" and a.private_tags == 0 and a.clean
    assert dicom.audit(g.dicom_dataset(PA)).burned_in_annotation == ""  # absent


def test_identifying_values_never_reach_an_error():
    ds = g.dicom_dataset(PA, patient_name="DOE^JANE", patient_id="MRN123", identifying=True)
    unsupported = g.dicom_with_syntax(PA, "1.2.840.10008.1.2.4.100", patient_name="DOE^JANE", patient_id="MRN123")
    for data in (unsupported, g.dicom(PA, patient_name="DOE^JANE", patient_id="MRN123")[:-300]):
        f = facts(data)
        assert not f.decodable
        assert "DOE" not in f.detail and "JANE" not in f.detail and "MRN123" not in f.detail
    assert dicom._scrub("bad value 'DOE^JANE' in MRN123", ds) == "bad value '<redacted>' in <redacted>"
