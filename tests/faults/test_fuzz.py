"""Fuzzing with hypothesis: hostile image bytes through the one decoder that validate, predict and
/predict share, and random params.yaml structures through the schema."""

import io
import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.core.contract.config import parse_params
from components.core.contract.errors import ParamsError
from components.core.data import images
from tests.conftest import encode, gray

SEEDS = [encode(gray(48, 40, seed=1), "JPEG"), encode(gray(48, 40, seed=2), "PNG"),
         encode(gray(40, 40, seed=3), "PNG", mode="RGB"), encode(gray(40, 40, seed=4), "BMP"),
         encode(gray(40, 40, seed=5), "TIFF")]
DICOM_LIKE = b"\0" * 128 + b"DICM"
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def png_with_dims(w: int, h: int, body: bytes) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from([*SEEDS, DICOM_LIKE + bytes(64)])))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            data = data[:i]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[i:i + draw(st.integers(1, 32))]
    return bytes(data)


hostile = st.one_of(
    st.binary(max_size=2048),
    mutated(),
    st.builds(png_with_dims, st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.binary(max_size=64)),
)


def check_decoder(data: bytes) -> None:
    facts = images.inspect_bytes(data, max_pixels=4_000_000)  # never raises
    assert facts.decodable or facts.reason
    try:
        out = images.load_for_model(data, 32, max_pixels=4_000_000)
        assert out.shape == (32, 32) and facts.decodable
    except images.ImageError as err:
        assert err.reason  # a short reason: quarantined in validate, a row error in predict, a 4xx in /predict


@FUZZ
@given(hostile)
def test_decoder_never_crashes_or_hangs(data):
    check_decoder(data)


@pytest.fixture(scope="module")
def api(tiny_model_dir):
    from components.core.registry import registry
    from serving.app import Settings, create_app

    return TestClient(create_app(registry.load(str(tiny_model_dir)), Settings(max_pixels=4_000_000)),
                      raise_server_exceptions=False)


@FUZZ
@given(data=hostile)
def test_predict_endpoint_answers_200_or_4xx(api, data):
    r = api.post("/predict", files={"file": ("x.png", io.BytesIO(data))})
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    assert "Traceback" not in r.text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=20)
sections = st.sampled_from(["data", "validate", "split", "preprocess", "train", "evaluate", "gate", "registry",
                            "mlflow", "trian"])
keys = st.sampled_from(["source", "path", "classes", "seed", "val_fraction", "backbone", "image_size", "phases",
                        "weights", "min_sensitivity", "external", "bootstrap", "critical", "workers", "x"])


@FUZZ
@given(st.one_of(json_values, st.dictionaries(sections, st.dictionaries(keys, json_values, max_size=4), max_size=4)))
def test_random_params_give_schema_errors_never_tracebacks(raw):
    try:
        parse_params(raw, "fuzzed params.yaml")
    except ParamsError as err:
        assert str(err).startswith("fuzzed params.yaml")
