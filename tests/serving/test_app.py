"""The REST API in-process (FastAPI TestClient): limits, types, auth, no stack traces."""

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from components.core.registry import registry
from serving.app import Settings, create_app
from tests import imagegen
from tests.imagegen import encode, float_tiff_with_nan, gray, multipage_tiff, png_header_only


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return registry.load(str(tiny_model_dir))


def client(bundle, **settings):
    return TestClient(create_app(bundle, Settings(**settings)), raise_server_exceptions=False)


def post(c, data: bytes, name="x.png", **kw):
    return c.post("/predict", files={"file": (name, data)}, **kw)


def test_predict_returns_label_probabilities_and_gradcam(bundle):
    c = client(bundle)
    r = post(c, encode(gray(120, 90), "JPEG"), params={"gradcam": "true"})
    assert r.status_code == 200
    body = r.json()
    assert body["label"] in bundle.classes and abs(sum(body["probabilities"].values()) - 1) < 1e-4
    png = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    assert png.size == (bundle.image_size, bundle.image_size) and png.mode == "RGB"
    assert "gradcam_png" not in post(c, encode(gray(), "PNG")).json()


@pytest.mark.parametrize(("data", "status", "error"), [
    (b"", 400, "empty_file"),
    (b"%PDF-1.4 not an image" * 10, 415, "not_an_image"),
    (b"\0" * 128 + b"DICM" + b"\0" * 100, 422, "dicom_no_pixels"),  # DICOM is read now; this one is empty
    (png_header_only(30_000, 30_000), 413, "too_large"),
    (encode(gray(200, 200), "JPEG")[:5000], 422, "truncated"),
    (encode(gray(64, 64), "JPEG")[:300], 422, "unreadable_header"),
])
def test_bad_uploads_are_4xx_with_a_reason(bundle, data, status, error):
    r = post(client(bundle), data, name="innocent.jpg")  # the name does not matter, the bytes do
    assert r.status_code == status and r.json()["detail"]["error"] == error
    assert "Traceback" not in r.text


def test_oversized_upload_is_refused(bundle):
    c = client(bundle, max_bytes=10_000)
    r = post(c, encode(gray(400, 400, seed=3), "PNG"))
    assert r.status_code == 413 and r.json()["detail"]["error"] == "too_large"


def test_pixel_limit(bundle):
    r = post(client(bundle, max_pixels=50 * 50), encode(gray(60, 60)))
    assert r.status_code == 413


def test_missing_file_field_is_422(bundle):
    assert client(bundle).post("/predict", data={"x": "1"}).status_code == 422


def test_bearer_token_guards_predict_and_model(bundle):
    c = client(bundle, token="s3cret")
    assert post(c, encode(gray())).status_code == 401
    assert c.get("/model").status_code == 401
    assert c.get("/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    assert c.get("/model", headers=ok).json()["classes"] == bundle.classes
    assert post(c, encode(gray()), headers=ok).status_code == 200
    assert c.get("/health").status_code == 200  # health stays open for probes


def test_cors_is_off_by_default(bundle):
    r = client(bundle).options("/predict", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_internal_errors_do_not_leak_traces(bundle, monkeypatch):
    c = client(bundle)

    def broken(x):
        raise RuntimeError("secret internal detail at /srv/model.keras")

    monkeypatch.setattr(bundle, "infer_ood", broken)  # make inference blow up inside the handler
    r = post(c, encode(gray()))
    assert r.status_code == 500 and r.json() == {"detail": {"error": "internal_error",
                                                            "detail": "the server failed; see its log"}}
    assert "secret internal detail" not in r.text


def test_page_is_served(bundle):
    r = client(bundle).get("/")
    assert r.status_code == 200 and "not a medical device" in r.text


def test_thresholded_decision_uses_the_operating_points(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    (d / "thresholds.json").write_text('{"PNEUMONIA": 0.0, "COVID19": 1.01}')
    b = registry.load(str(d))
    body = post(client(b), encode(gray())).json()
    assert body["decision"] == {"PNEUMONIA": True, "COVID19": False}
    assert body["thresholds"] == {"PNEUMONIA": 0.0, "COVID19": 1.01}


def test_model_card_endpoint(bundle):
    assert client(bundle).get("/model/card").status_code == 404  # a bare model file has no card


# ---------------------------------------------------------------- validate's limits, DICOM uploads
PHI = ("DOE", "JANE", "MRN123", "Example Hospital", "ACC12345", "19700101", "XR-ROOM-3", "SN-0001")


def dicom_with_phi(**kw) -> bytes:
    return imagegen.dicom(imagegen.deep(64, 72), patient_name="DOE^JANE", patient_id="MRN123", identifying=True, **kw)


def test_a_1x1_image_is_refused_naming_the_limit(bundle):
    r = post(client(bundle), encode(gray(1, 1)))
    assert r.status_code == 422
    assert r.json()["detail"] == {"error": "too_small", "limit": "validate.min_side",
                                  "detail": "1x1: shorter side 1 < limit 32 (validate.min_side)"}


def test_max_side_and_max_pixels_name_their_limit(bundle):
    r = post(client(bundle, max_side=100), encode(gray(130, 60)))
    assert r.status_code == 413 and r.json()["detail"]["limit"] == "validate.max_side"
    r = post(client(bundle, max_pixels=50 * 50), encode(gray(60, 60)))
    assert r.status_code == 413 and r.json()["detail"]["limit"] == "validate.max_pixels"
    assert "3600 pixels > limit 2500" in r.json()["detail"]["detail"]


def test_settings_take_validate_params_and_env_overrides(monkeypatch):
    from components.core.contract.params.validate import ValidateConfig

    s = Settings.from_env(ValidateConfig(min_side=100, max_side=2000, max_pixels=3_000_000))
    assert (s.min_side, s.max_side, s.max_pixels) == (100, 2000, 3_000_000)
    assert Settings.from_env().limits == Settings().limits  # defaults = validate's defaults
    monkeypatch.setenv("CXR_MIN_SIDE", "64")
    assert Settings.from_env(ValidateConfig(min_side=100)).limits.min_side == 64


def test_dicom_upload_is_predicted_and_nothing_identifying_is_echoed(bundle):
    c = client(bundle)
    r = post(c, dicom_with_phi(), name="DOE_JANE.dcm", params={"gradcam": "true"})
    assert r.status_code == 200 and r.json()["label"] in bundle.classes
    assert not any(v in r.text for v in PHI)


@pytest.mark.parametrize(("kwargs", "status", "error"), [
    ({"frames": 2}, 422, "dicom_multiframe"),
    ({"syntax": "1.2.840.10008.1.2.4.100"}, 415, "dicom_unsupported_transfer_syntax"),
    ({"truncate": 300}, 422, "truncated"),
])
def test_bad_dicom_uploads_name_the_reason_without_identifying_values(bundle, kwargs, status, error):
    if "syntax" in kwargs:
        data = imagegen.dicom_with_syntax(imagegen.deep(64, 72), kwargs["syntax"], patient_name="DOE^JANE",
                                          patient_id="MRN123", identifying=True)
    elif "truncate" in kwargs:
        data = dicom_with_phi()[:-kwargs["truncate"]]
    else:
        data = dicom_with_phi(**kwargs)
    r = post(client(bundle), data)
    assert r.status_code == status and r.json()["detail"]["error"] == error
    assert not any(v in r.text for v in PHI)


def test_batch_predict_applies_validate_limits_and_reads_dicom(tiny_model_dir, tmp_path):
    import pandas as pd

    from components.core.data import images
    from serving import predict

    d = tmp_path / "in"
    d.mkdir()
    (d / "ok.png").write_bytes(encode(gray(64, 64)))
    (d / "tiny.png").write_bytes(encode(gray(1, 1)))
    (d / "huge.png").write_bytes(png_header_only(9000, 9000))
    (d / "film.dcm").write_bytes(dicom_with_phi())
    (d / "cine.dcm").write_bytes(dicom_with_phi(frames=3))
    b = registry.load(str(tiny_model_dir))
    summary = predict.run(b, d, tmp_path / "preds.csv", workers=1)
    df = pd.read_csv(tmp_path / "preds.csv", keep_default_na=False).set_index("path")
    assert summary["predicted"] == 2 and df.loc["ok.png", "error"] == "" and df.loc["film.dcm", "predicted_label"]
    assert df.loc["tiny.png", "error"] == "too_small: 1x1: shorter side 1 < limit 32 (validate.min_side)"
    assert df.loc["huge.png", "error"].startswith("too_large: 9000x9000 = 81000000 pixels > limit 40000000")
    assert df.loc["cine.dcm", "error"].startswith("dicom_multiframe: 3 frames")
    assert not any(v in (tmp_path / "preds.csv").read_text() for v in PHI)
    predict.run(b, d, tmp_path / "strict.csv", workers=1, limits=images.Limits(max_side=70))  # the caller's limits
    strict = pd.read_csv(tmp_path / "strict.csv", keep_default_na=False).set_index("path")
    assert strict.loc["ok.png", "error"] == "" and strict.loc["film.dcm", "error"].startswith("too_large: 64x72")


def test_films_with_nothing_in_them_are_422(bundle):
    """Issue 32: blank and NaN films are refused as validate quarantines them and predict refuses them."""
    c = client(bundle)
    r = post(c, encode(np.zeros((64, 64), np.uint8)))
    assert r.status_code == 422 and r.json()["detail"] == {
        "error": "blank_film", "limit": "validate.min_pixel_std",
        "detail": "pixel standard deviation 0.00 < limit 2 grey levels (validate.min_pixel_std): the film shows "
                  "nothing"}
    r = post(c, float_tiff_with_nan(), name="x.tiff")
    assert r.status_code == 422 and r.json()["detail"]["error"] == "non_finite_pixels"


def test_decoder_warnings_are_in_the_response_as_in_predicts_note(bundle):
    c = client(bundle)
    assert post(c, multipage_tiff(3), name="x.tiff").json()["warnings"] == ["multi_frame: 3 frames, frame 0 used"]
    assert post(c, encode(gray())).json()["warnings"] == []
