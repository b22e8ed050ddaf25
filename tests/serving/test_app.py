"""The REST API in-process (FastAPI TestClient): limits, types, auth, no stack traces."""

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from components.core import registry
from serving.app import Settings, create_app
from tests.conftest import encode, gray, png_header_only


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
    (b"\0" * 128 + b"DICM" + b"\0" * 100, 415, "unsupported_format"),
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

    monkeypatch.setattr(bundle, "infer", broken)  # make inference blow up inside the handler
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
