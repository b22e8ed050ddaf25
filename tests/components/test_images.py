import numpy as np

from components.core import images
from tests.conftest import encode, gray, png_16bit, png_header_only


def test_jpeg_and_png_facts():
    arr = gray(80, 60)
    for fmt in ("JPEG", "PNG"):
        f = images.inspect_bytes(encode(arr, fmt))
        assert f.decodable and f.format == fmt and (f.width, f.height) == (80, 60) and f.channels == 1
        assert len(f.sha256) == 64 and f.bytes > 0


def test_zero_byte_file():
    f = images.inspect_bytes(b"")
    assert not f.decodable and f.reason == "empty_file"


def test_text_named_png_is_not_an_image():
    f = images.inspect_bytes(b"hello, I am a text file\n" * 10)
    assert not f.decodable and f.reason == "not_an_image"


def test_truncated_jpeg():
    data = encode(gray(128, 128), "JPEG")
    f = images.inspect_bytes(data[: len(data) // 2])
    assert not f.decodable and f.reason == "truncated"
    assert f.width == 128  # the header was readable


def test_16bit_png_is_windowed_to_uint8():
    data = png_16bit()
    f = images.inspect_bytes(data)
    assert f.decodable and f.bit_depth == 16 and f.channels == 1
    out = images.decode_gray(data)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_rgba_png_decodes_to_gray():
    rgba = np.dstack([gray(32, 32)] * 3 + [np.full((32, 32), 128, np.uint8)])
    data = encode(rgba)
    f = images.inspect_bytes(data)
    assert f.decodable and f.channels == 4
    assert images.decode_gray(data).shape == (32, 32)


def test_decompression_bomb_rejected_from_header():
    f = images.inspect_bytes(png_header_only(100_000, 100_000))
    assert not f.decodable and f.reason == "too_large"
    f = images.inspect_bytes(png_header_only(5000, 5000), max_pixels=1_000_000)
    assert f.reason == "too_large"


def test_dicom_is_named():
    f = images.inspect_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    assert f.reason == "unsupported_format"


def test_fit_square_pad_and_crop_keep_aspect():
    arr = np.full((50, 100), 200, np.uint8)
    padded = images.fit_square(arr, 32, "pad")
    assert padded.shape == (32, 32) and padded[0, 16] == 0 and padded[16, 16] == 200
    cropped = images.fit_square(arr, 32, "crop")
    assert cropped.shape == (32, 32) and cropped.min() == 200


def test_load_for_model_shape():
    assert images.load_for_model(encode(gray(300, 200), "JPEG"), 64).shape == (64, 64)
