import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from components.core.data import images, square
from tests import imagegen
from tests.imagegen import encode, film, garbled_jpeg, gray, half_transparent_png, multipage_tiff, png_16bit, png_header_only


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


def test_quarantine_reasons_keep_their_numbers_and_the_header_size():
    f = images.inspect_bytes(png_header_only(9000, 9000))
    assert f.reason == "too_large" and (f.width, f.height) == (9000, 9000) and f.format == "PNG"
    assert f.detail == "9000x9000 = 81000000 pixels > limit 40000000 (validate.max_pixels)"
    assert f.reason_text() == "too_large: " + f.detail
    data = encode(gray(96, 80), "PNG")
    f = images.inspect_bytes(data[: len(data) // 2])
    assert f.reason == "truncated" and (f.width, f.height) == (96, 80) and f.detail


def test_empty_dicom_shell_is_named():
    f = images.inspect_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    assert f.format == "DICOM" and not f.decodable and f.reason.startswith("dicom_")


def test_fit_square_pad_and_crop_keep_aspect():
    arr = np.full((50, 100), 200, np.uint8)
    padded = square.fit_square(arr, 32, "pad")
    assert padded.shape == (32, 32) and padded[0, 16] == 0 and padded[16, 16] == 200
    cropped = square.fit_square(arr, 32, "crop")
    assert cropped.shape == (32, 32) and cropped.min() == 200


def test_load_for_model_shape():
    assert images.load_for_model(encode(gray(300, 200), "JPEG"), 64, "crop").shape == (64, 64)


# ---------------------------------------------------------------- faithful pixels
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("kind", ["spot", "strip"])
def test_16bit_marker_does_not_blacken_the_lungs(fmt, kind):
    w, h = 80, 96
    clean, marked = imagegen.deep(w, h), imagegen.with_marker(imagegen.deep(w, h), kind)
    lungs, body = imagegen.lung_mask(w, h), ~imagegen.lung_mask(w, h)
    out_clean = images.decode_gray(imagegen.encode16(clean, fmt))
    out = images.decode_gray(imagegen.encode16(marked, fmt))
    # min-max would put the whole film below 12 of 255 (3000 of 65535)
    assert out[body].mean() - out[lungs].mean() > 100  # lungs visibly darker than the body
    assert abs(out[lungs].mean() - out_clean[lungs].mean()) < 3 and out[lungs].std() > 3  # texture kept
    assert images.inspect_bytes(imagegen.encode16(marked, fmt)).window == "percentile_0.5_99.5"


def test_robust_window_edge_cases():
    assert images.robust_window(np.full((8, 8), 7, np.uint16))[0].max() == 0  # constant: no crash
    binary = np.zeros((8, 8), np.uint16)
    binary[:4] = 4000
    out, rule = images.robust_window(binary)
    assert rule == "minmax" and set(np.unique(out)) == {0, 255}
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    out, _ = images.robust_window(f)
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[-1, -1] == 255
    f[0, 0] = np.nan  # a NaN is refused (issue 32), never drawn black
    with pytest.raises(images.ImageError, match=r"^non_finite_pixels: 1 of 64 pixels \(1.6%\) are NaN"):
        images.robust_window(f)


def test_8bit_images_are_not_stretched():
    arr = np.full((40, 40), 100, np.uint8)
    arr[:20] = 120
    assert np.array_equal(images.decode_gray(encode(arr, "PNG")), arr)


ROTATED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"] + (["WEBP"] if images.WEBP else []))
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_for_every_format(fmt, orientation):
    arr = imagegen.asymmetric(48, 32)
    data = imagegen.with_orientation(arr, orientation, fmt)
    expected = np.asarray(Image.fromarray(arr).transpose(ROTATED[orientation]))
    out = images.decode_gray(data)
    assert out.shape == expected.shape and np.abs(out.astype(int) - expected).mean() < 2
    f = images.inspect_bytes(data)
    assert f.decodable and f.orientation == orientation and (f.height, f.width) == expected.shape


def test_png_exif_after_the_pixels_is_applied():
    data = imagegen.with_orientation(imagegen.asymmetric(48, 32), 6, "PNG")
    start = data.index(b"eXIf") - 4
    length = int.from_bytes(data[start:start + 4], "big")
    chunk = data[start:start + 12 + length]
    rest = data[:start] + data[start + 12 + length:]
    iend = rest.index(b"IEND") - 4
    moved = rest[:iend] + chunk + rest[iend:]  # eXIf between the last IDAT and IEND
    f = images.inspect_bytes(moved)
    assert f.decodable and f.orientation == 6 and (f.width, f.height) == (32, 48)
    assert images.decode_gray(moved).shape == (48, 32)


def test_jpeg_is_decoded_in_full_like_every_format():
    """No draft-mode shortcut: a JPEG reaches the model as full decode + the one resize."""
    data = encode(gray(300, 200, seed=5), "JPEG")
    full = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert np.array_equal(images.load_for_model(data, 32, "pad"), square.fit_square(full, 32, "pad"))
    png = encode(full, "PNG")  # the same pixels in another container give the same model input
    assert np.array_equal(images.load_for_model(png, 32, "crop"), images.load_for_model(data, 32, "crop"))


@pytest.mark.skipif(not images.WEBP, reason="Pillow built without WebP")
def test_webp_is_recognised():
    f = images.inspect_bytes(encode(gray(40, 40), "WEBP"))
    assert f.decodable and f.format == "WEBP"


# ---------------------------------------------------------------- validate's limits everywhere
def test_limits_default_to_validate_defaults():
    from components.core.contract.params.validate import ValidateConfig

    v = ValidateConfig()
    assert images.Limits() == images.Limits.from_config(v) == images.Limits(v.min_side, v.max_side, v.max_pixels)


@pytest.mark.parametrize(("w", "h", "reason", "limit"), [
    (1, 1, "too_small", "validate.min_side"),
    (200, 20, "too_small", "validate.min_side"),
    (300, 33, "too_large", "validate.max_side"),
    (120, 120, "too_large", "validate.max_pixels"),
])
def test_load_for_model_applies_validate_limits(w, h, reason, limit):
    limits = images.Limits(min_side=32, max_side=256, max_pixels=10_000)
    with pytest.raises(images.ImageError) as err:
        images.load_for_model(encode(gray(w, h)), 32, "crop", limits=limits)
    assert err.value.reason == reason and err.value.limit == limit and limit in err.value.detail
    assert f"{w}x{h}" in err.value.detail
    assert images.load_for_model(encode(gray(64, 48)), 32, "crop", limits=limits).shape == (32, 32)


def test_limits_use_the_displayed_size():
    data = imagegen.with_orientation(imagegen.asymmetric(48, 32), 6, "JPEG")
    with pytest.raises(images.ImageError, match=r"32x48: longer side 48 > limit 40"):
        images.load_for_model(data, 32, "crop", limits=images.Limits(min_side=8, max_side=40))


def test_decode_files_reports_limit_errors_per_file(tmp_path):
    (tmp_path / "ok.png").write_bytes(encode(gray(64, 64)))
    (tmp_path / "tiny.png").write_bytes(encode(gray(1, 1)))
    out = images.decode_files([str(tmp_path / "ok.png"), str(tmp_path / "tiny.png")], 32, "crop",
                              limits=images.Limits())
    assert out[0].shape == (32, 32) and out[1].startswith("too_small: 1x1")
    assert images.decode_files([str(tmp_path / "tiny.png")], 32, "crop")[0].shape == (32, 32)  # no limits: as before


# ---------------------------------------------------------------- damaged films (issue 23)
def test_corrupt_jpeg_data_is_named_where_pillow_stays_silent():
    data = garbled_jpeg()
    Image.open(io.BytesIO(data)).load()  # Pillow decodes the garbled rows without a word
    f = images.inspect_bytes(data)
    assert not f.decodable and f.reason == "corrupt_data" and (f.width, f.height) == (128, 128)
    assert f.detail == "libjpeg: Corrupt JPEG data: premature end of data segment"
    with pytest.raises(images.ImageError, match="corrupt_data"):  # predict and /predict refuse it too
        images.decode_gray(data, limits=images.Limits())
    assert images.inspect_bytes(encode(film(), "JPEG")).decodable


def test_pillow_warnings_while_reading_are_corrupt_data():
    png = encode(film(64, 64))
    actl = b"acTL" + bytes(8)  # an animation control chunk declaring 0 frames: Pillow warns "Invalid APNG"
    chunk = struct.pack(">I", 8) + actl + struct.pack(">I", zlib.crc32(actl))
    data = png[:33] + chunk + png[33:]  # after the 8-byte signature and the 25-byte IHDR chunk
    f = images.inspect_bytes(data)
    assert f.reason == "corrupt_data" and f.detail == "Pillow: Invalid APNG, will use default PNG image if possible"


def test_transparent_pixels_have_a_share_and_a_limit():
    f = images.inspect_bytes(half_transparent_png())
    assert f.decodable and f.transparent_share == 0.5 and f.channels == 4
    with pytest.raises(images.ImageError) as err:
        images.decode_gray(half_transparent_png(), limits=images.Limits())
    assert err.value.reason == "transparent_pixels" and err.value.limit == "validate.max_transparent_share"
    assert err.value.detail == "50.0% of the film has alpha < 128 (limit 1.0%, validate.max_transparent_share)"
    assert images.decode_gray(half_transparent_png(), limits=images.Limits(max_transparent_share=0.6)).shape == (64, 64)


def test_multi_frame_names_the_count_and_the_frame_used():
    f = images.inspect_bytes(multipage_tiff(3))
    assert f.decodable and f.frames == 3 and f.warnings == "multi_frame: 3 frames, frame 0 used"
    assert images.inspect_bytes(encode(film(64, 64), "TIFF")).frames == 1


def test_a_bomb_past_pillows_guard_keeps_its_header_and_numbers():
    f = images.inspect_bytes(png_header_only(60_000, 60_000))
    assert (f.reason, f.width, f.height, f.format) == ("too_large", 60_000, 60_000, "PNG")
    assert f.detail == "60000x60000 = 3600000000 pixels > limit 40000000 (validate.max_pixels)"
    # a limit above Pillow's own: validate.max_pixels decides, not Pillow
    f = images.inspect_bytes(png_header_only(20_000, 20_000), max_pixels=500_000_000)
    assert f.reason == "truncated" and (f.width, f.height) == (20_000, 20_000)


def test_the_resize_modes_live_with_the_data_and_the_schema_names_the_same():
    from components.core.contract.params.preprocess import RESIZE_MODES

    assert square.MODES == RESIZE_MODES
