"""Image facts and decoding, shared by validate, preprocess, predict and the REST API.

One decoder for every entry point, so a file that validates also decodes for training and
serving, and hostile bytes get the same answer everywhere: an :class:`ImageError` with a short
reason, never a crash. The type is taken from the magic bytes, not the file name, and the pixel
count is checked from the header before anything is decoded (decompression bombs).
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from components.core.errors import DataError
from components.core.progress import progress

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own header check (max_pixels) runs first; keep PIL's guard as a second line.
Image.MAX_IMAGE_PIXELS = 200_000_000

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(DataError):
    """An image that cannot be used; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def sniff_format(head: bytes) -> str | None:
    """The container format from the first bytes, or None when it is not an image we know."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    return None


@dataclass(frozen=True)
class ImageFacts:
    """What validate records for one file (the manifest columns after ``path``/``label``)."""

    width: int = 0
    height: int = 0
    channels: int = 0
    mode: str = ""
    format: str = ""
    bit_depth: int = 0
    bytes: int = 0
    sha256: str = ""
    decodable: bool = False
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


_CHANNELS = {"1": 1, "L": 1, "P": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1,
             "LA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "CMYK": 4}


def _bit_depth(im: Image.Image) -> int:
    if im.mode.startswith("I;16") or im.mode == "I":
        return 16
    if im.mode == "F":
        return 32
    if im.mode == "1":
        return 1
    return 8


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open from bytes with every check that needs only the header."""
    if not data:
        raise ImageError("empty_file", "the file has 0 bytes")
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise ImageError("not_an_image", "the bytes are not JPEG, PNG, BMP or TIFF (checked by magic bytes)")
    if fmt == "DICOM":
        raise ImageError("unsupported_format", "DICOM is not supported: export the images as PNG (16-bit is fine)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError("too_large", str(err)) from None
    except Exception as err:  # PIL raises many types for hostile headers
        raise ImageError("unreadable_header", f"{type(err).__name__}: {err}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError("bad_dimensions", f"{w}x{h}")
    if w * h > max_pixels:
        raise ImageError("too_large", f"{w}x{h} = {w * h} pixels > limit {max_pixels} (validate.max_pixels)")
    return im


def _load(im: Image.Image, draft_size: int | None = None) -> Image.Image:
    """Decode the pixels (JPEGs at reduced DCT scale when ``draft_size`` allows it)."""
    try:
        if draft_size and im.format == "JPEG":
            im.draft("L", (draft_size, draft_size))
        im.load()
    except Exception as err:
        text = str(err)
        reason = "truncated" if "truncat" in text.lower() or isinstance(err, OSError) else "undecodable"
        raise ImageError(reason, f"{type(err).__name__}: {text}") from None
    return im


def inspect_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """Facts about one encoded image; never raises for bad bytes (``decodable=False`` + reason)."""
    base = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        im = _open(data, max_pixels)
    except ImageError as err:
        return ImageFacts(**base, format=(sniff_format(data[:132]) or ""), reason=err.reason)
    facts = {
        **base,
        "width": im.size[0],
        "height": im.size[1],
        "mode": im.mode,
        "channels": _CHANNELS.get(im.mode, 0),
        "format": im.format or "",
        "bit_depth": _bit_depth(im),
    }
    try:
        # A full decode proves the file is complete; JPEG at 1/8 scale still reads every scan.
        _load(im, draft_size=max(1, min(im.size) // 8))
    except ImageError as err:
        return ImageFacts(**facts, reason=err.reason)
    return ImageFacts(**facts, decodable=True)


def inspect_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return ImageFacts(reason="unreadable_file", format=type(err).__name__)
    return inspect_bytes(data, max_pixels)


def to_gray_uint8(im: Image.Image) -> np.ndarray:
    """Any decoded mode → 2-D uint8. Deep images (16-bit, float) are min-max windowed."""
    im = ImageOps.exif_transpose(im) if im.format == "JPEG" else im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("L"), dtype=np.uint8)


def decode_gray(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> np.ndarray:
    """Decode encoded bytes to a 2-D uint8 array, or raise :class:`ImageError`."""
    im = _load(_open(data, max_pixels), draft_size)
    try:
        return to_gray_uint8(im)
    except Exception as err:
        raise ImageError("undecodable", f"{type(err).__name__}: {err}") from None


def fit_square(gray: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """Aspect-preserving resize to ``size``×``size``: letterbox (``pad``) or centre ``crop``."""
    h, w = gray.shape
    im = Image.fromarray(gray)
    scale = (size / max(h, w)) if mode == "pad" else (size / min(h, w))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if mode == "pad":
        canvas = Image.new("L", (size, size), 0)
        canvas.paste(im, ((size - nw) // 2, (size - nh) // 2))
        return np.asarray(canvas, dtype=np.uint8)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_for_model(data: bytes, size: int, mode: str = "pad", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded bytes → ``size``×``size`` uint8, the exact input the saved model expects."""
    return fit_square(decode_gray(data, max_pixels, draft_size=size * 2), size, mode)


def _load_file(path: str, size: int, mode: str, max_pixels: int) -> np.ndarray | str:
    try:
        return load_for_model(Path(path).read_bytes(), size, mode, max_pixels)
    except OSError as err:
        return f"unreadable_file: {err.strerror or err}"
    except ImageError as err:
        return str(err)


def decode_files(paths: list[str], size: int, mode: str = "pad", max_pixels: int = DEFAULT_MAX_PIXELS,
                 workers: int = 1, desc: str = "decode") -> list[np.ndarray | str]:
    """Decode files for the model in ``workers`` processes: an array per file, or the error text."""
    fn = functools.partial(_load_file, size=size, mode=mode, max_pixels=max_pixels)
    if workers <= 1 or len(paths) < 32:
        return [fn(p) for p in progress(paths, desc, total=len(paths))]
    chunk = max(1, min(32, len(paths) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(progress(pool.map(fn, paths, chunksize=chunk), desc, total=len(paths)))
