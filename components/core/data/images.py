"""Image facts and decoding, shared by validate, preprocess, predict and the REST API.

One decoder for every entry point, so a file that validates also decodes for training and
serving, and hostile bytes get the same answer everywhere: an :class:`ImageError` with a short
reason code and a detail that keeps the numbers (``too_large: 9000x9000 = 81000000 pixels > limit
40000000 (validate.max_pixels)``), never a crash. The type is taken from the magic bytes, not the
file name, and the pixel count is checked from the header before anything is decoded
(decompression bombs). When the header could be read, its width/height stay in the facts even if
the pixels cannot be decoded.

Formats: JPEG, PNG, BMP, TIFF, WebP (when Pillow has it) and DICOM (``components.core.data.dicom``:
Part 10 files by their ``DICM`` magic whatever their name, bare datasets by a stricter check).

Pixels, the same path for every format:

1. **Full decode**, then one resize (:func:`fit_square`). JPEG draft mode (DCT-domain downscaling)
   was measured against full decode + the same resize on real chest films: mean absolute
   difference 0.7 / 1.0 / 0.4 grey levels at 32 / 64 / 224 px, single pixels up to 236 levels apart,
   for about 5 ms/image saved. Pixels that depend on the container would give a model a format
   signature (in mixed sets, format follows class), so draft mode is not used; ``draft_size`` is
   accepted and ignored.
2. **Orientation**: the EXIF orientation tag is applied for every format (JPEG, PNG eXIf, TIFF,
   WebP); ``width``/``height`` in the facts are the displayed (post-rotation) sizes and
   ``orientation`` keeps the tag (0: none).
3. **Windowing to 8 bits**: 8-bit images are kept as they are. Deeper images (16-bit, 32-bit
   integer, float) use :func:`robust_window`: the 0.5th–99.5th percentiles of the pixels strictly
   between the image's minimum and maximum values. Padding strips, collimator borders and burned-in
   markers are typically flat at an extreme value (65535, 0), so they are excluded whatever their
   area; bright or dark details covering under 0.5% of the remaining pixels clip instead of
   compressing the lungs into a few grey levels (min–max did: a 16-bit film with one marker at
   65535 came out almost black). DICOM uses its own VOI LUT / window first (see ``dicom.py``).
   ``window`` in the facts says which rule was used.

Damaged films (validate quarantines them, predict and ``/predict`` refuse them; see docs/data.md,
"Inputs: every file and row accounted for"):

- ``corrupt_data``: the decoder reported corrupt or extraneous data but produced pixels anyway. Pillow
  discards libjpeg's warnings, so a JPEG's entropy-coded data is decoded a second time by libjpeg-turbo
  (``simplejpeg``, strict, at 1/8 scale: the Huffman decoding is the whole check); Pillow's own warnings
  while opening and loading count too.
- ``transparent_pixels``: a film with an alpha channel is drawn over black; ``transparent_share`` is the
  share of pixels with alpha below :data:`TRANSPARENT_ALPHA`, refused above ``validate.max_transparent_share``.
- ``multi_frame`` (a warning, not a refusal): a multi-page TIFF, an animated PNG/WebP or an MPO JPEG; frame 0
  is used, ``frames`` keeps the count and ``warnings`` says so (validate's ``multi_frame`` expectation).
- ``non_finite_pixels``: a float image (a 32-bit TIFF, float DICOM pixel data) with NaN or infinite values; it
  would otherwise be drawn with those pixels black.
- ``blank_film``: a film that shows nothing, its 8-bit pixels' standard deviation (``pixel_std`` in the facts)
  under ``validate.min_pixel_std`` (all black, all white, a flat grey); validate's ``blank_film`` expectation.

A decompression bomb (a header beyond Pillow's own guard) is re-read without that guard, so its reason
names the header's width, height and pixel count against ``validate.max_pixels`` like any other size.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, features

from components.core.contract.errors import DataError
from components.core.contract.progress import progress
from components.core.data.square import fit_square
from components.core.data.pixels import WINDOW_PERCENTILES, ImageError, robust_window

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own header check (max_pixels) runs first; keep PIL's guard as a second line.
Image.MAX_IMAGE_PIXELS = 200_000_000

WEBP = features.check("webp")
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF") + (("WEBP",) if WEBP else ())
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom") + ((".webp",) if WEBP else ())
DEFAULT_MAX_PIXELS = 40_000_000
ORIENTATION_TAG = 0x0112
# A pixel whose alpha is below this shows mostly the black background it is drawn over.
TRANSPARENT_ALPHA = 128
DEFAULT_MAX_TRANSPARENT_SHARE = 0.01
# A film whose 8-bit pixels vary less than this (standard deviation, grey levels) shows nothing: blank_film.
DEFAULT_MIN_PIXEL_STD = 2.0
# Bytes one input may have: serve's upload limit, and predict's per file (CXR_MAX_UPLOAD_BYTES sets both).
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The limits validate applies (``params.validate``), for predict and the REST API too, and the byte
    limit of one input (``max_bytes``: serve's upload limit, predict's per file; validate has none).

    Defaults are ``ValidateConfig``'s. ``check`` refuses from the header, before decoding.
    """

    min_side: int = 32
    max_side: int = 8192
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_transparent_share: float = DEFAULT_MAX_TRANSPARENT_SHARE
    min_pixel_std: float = DEFAULT_MIN_PIXEL_STD
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_config(cls, validate, max_bytes: int = DEFAULT_MAX_BYTES) -> Limits:
        """From ``params.validate_`` (any object with ``min_side``, ``max_side``, ``max_pixels`` and
        optionally ``max_transparent_share``, ``min_pixel_std``)."""
        share = getattr(validate, "max_transparent_share", DEFAULT_MAX_TRANSPARENT_SHARE)
        std = getattr(validate, "min_pixel_std", DEFAULT_MIN_PIXEL_STD)
        return cls(int(validate.min_side), int(validate.max_side), int(validate.max_pixels), float(share),
                   float(std), int(max_bytes))

    def side_problem(self, width: int, height: int) -> str:
        """``'WxH: shorter side 8 < limit 32 (validate.min_side)'`` when a side is out of range, else ''."""
        size = f"{width}x{height}"
        if min(width, height) < self.min_side:
            return f"{size}: shorter side {min(width, height)} < limit {self.min_side} (validate.min_side)"
        if max(width, height) > self.max_side:
            return f"{size}: longer side {max(width, height)} > limit {self.max_side} (validate.max_side)"
        return ""

    def check_transparency(self, share: float, facts: dict | None = None) -> None:
        if share > self.max_transparent_share:
            raise ImageError("transparent_pixels", transparency_detail(share, self.max_transparent_share),
                             limit="validate.max_transparent_share", facts=facts)

    def check_blank(self, std: float, facts: dict | None = None) -> None:
        if std < self.min_pixel_std:
            raise ImageError("blank_film", blank_detail(std, self.min_pixel_std), limit="validate.min_pixel_std",
                             facts=facts)

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise ImageError("too_large", f"the file is {size} bytes > limit {self.max_bytes} "
                                          "(CXR_MAX_UPLOAD_BYTES)", limit="CXR_MAX_UPLOAD_BYTES")

    def check(self, width: int, height: int) -> None:
        problem = self.side_problem(width, height)
        if problem:
            small = min(width, height) < self.min_side
            raise ImageError("too_small" if small else "too_large", problem,
                             limit="validate.min_side" if small else "validate.max_side")
        if width * height > self.max_pixels:
            raise ImageError("too_large", f"{width}x{height} = {width * height} pixels > limit {self.max_pixels} "
                                          "(validate.max_pixels)", limit="validate.max_pixels")


def transparency_detail(share: float, limit: float) -> str:
    """``'52.3% of the film has alpha < 128 (limit 1.0%, validate.max_transparent_share)'``."""
    return (f"{share:.1%} of the film has alpha < {TRANSPARENT_ALPHA} (limit {limit:.1%}, "
            "validate.max_transparent_share)")


def blank_detail(std: float, limit: float) -> str:
    """``'pixel standard deviation 0.00 < limit 2.0 grey levels (validate.min_pixel_std): the film shows
    nothing'``."""
    return (f"pixel standard deviation {std:.2f} < limit {limit:g} grey levels (validate.min_pixel_std): the film "
            "shows nothing")


def pixel_std(gray: np.ndarray) -> float:
    """The standard deviation of a film's 8-bit pixels, on a regular grid of at most about 512×512 of them
    (a blank film is blank on any grid; the whole of a 5-megapixel film would cost ~20 ms)."""
    gray = np.asarray(gray)
    if not gray.size:
        return 0.0
    step = max(1, int(np.sqrt(gray.size / 262_144)))  # a regular grid of about 512x512 pixels
    counts = np.bincount(np.ascontiguousarray(gray[::step, ::step], dtype=np.uint8).ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64)
    mean = counts @ levels / counts.sum()
    return round(float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum())), 3)  # the std, from a histogram


def sniff_format(head: bytes) -> str | None:
    """The container format from the first bytes (pass at least 132), or None when it is not an
    image we know."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if WEBP and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    from components.core.data.dicom import looks_like_bare_dataset

    if looks_like_bare_dataset(head):
        return "DICOM"
    return None


@dataclass(frozen=True)
class ImageFacts:
    """What validate records for one file (the manifest columns after ``path``/``label``).

    ``reason`` is the code, ``detail`` the text with the numbers. The DICOM fields are empty for
    other formats; ``dicom_patient_id`` is the raw PatientID (keep it in the data folder only) and
    ``dicom_patient_digest`` its pseudonym (``dicom.patient_digest``). ``phi_*``,
    ``burned_in_annotation`` and ``private_tags`` are the de-identification audit (names and counts,
    never values).
    """

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
    detail: str = ""
    orientation: int = 0
    window: str = ""
    modality: str = ""
    view_position: str = ""
    manufacturer: str = ""
    study_uid: str = ""
    series_uid: str = ""
    pixel_spacing: str = ""
    transfer_syntax: str = ""
    dicom_patient_id: str = ""
    dicom_patient_digest: str = ""
    phi_count: int = 0
    phi_attributes: str = ""
    burned_in_annotation: str = ""
    private_tags: int = 0
    frames: int = 0
    transparent_share: float = 0.0
    pixel_std: float = 0.0  # of the 8-bit film (validate's blank_film); 0 when it was not decoded
    warnings: str = ""  # named warnings, "; "-separated: "multi_frame: 3 frames, frame 0 used"

    def as_dict(self) -> dict:
        return asdict(self)

    def reason_text(self) -> str:
        """``reason: detail`` (what a quarantine list shows), '' for a decodable file."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


_FACT_FIELDS = frozenset(f.name for f in fields(ImageFacts))

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


def _to_gray(im: Image.Image) -> tuple[np.ndarray, str, float]:
    """A decoded (already oriented) image → 2-D uint8, the windowing rule, and the share of pixels whose
    alpha is below :data:`TRANSPARENT_ALPHA` (0 without an alpha channel)."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return (*robust_window(np.asarray(im)), 0.0)
    share = 0.0
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        with warnings.catch_warnings():  # "palette images with transparency … should be converted": we do
            warnings.simplefilter("ignore")
            im = im.convert("RGBA")
        share = float((np.asarray(im.getchannel("A")) < TRANSPARENT_ALPHA).mean()) if im.size[0] * im.size[1] else 0.0
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("L"), dtype=np.uint8), "none", share


def _open_unguarded(data: bytes, fmt: str) -> Image.Image:
    """Open with the plugin of the sniffed format, without Pillow's decompression-bomb guard (which
    refuses before telling the size): only the header is read, and the caller's own limit decides."""
    Image.init()
    factory = Image.OPEN[fmt][0]
    return factory(io.BytesIO(data), None)


def _frames(im: Image.Image) -> int:
    """How many frames (TIFF pages, APNG/WebP frames, MPO images) the file holds; 1 when it cannot say."""
    try:
        n = int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # a damaged IFD chain: the first frame is all that is read anyway
        return 1
    return max(n, 1)


JPEG_CORRUPT = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters", "Bogus ")


def _jpeg_integrity(data: bytes) -> str:
    """libjpeg-turbo's warnings (corrupt or extraneous data) for a JPEG that Pillow decoded: Pillow discards
    them. The entropy-coded data is decoded in full at 1/8 scale; '' when libjpeg had nothing to say."""
    try:
        import simplejpeg
    except ImportError:  # a declared dependency (pyproject.toml): an environment without it skips the check
        return ""
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, min_factor=8)
    except ValueError as err:
        text = str(err)
        if text.startswith(JPEG_CORRUPT):
            return f"libjpeg: {text}"
    except Exception:  # a JPEG variant libjpeg-turbo cannot convert (Pillow could): not a corruption
        return ""
    return ""


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 0) or 0)
    except Exception:
        return 0
    return value if 1 <= value <= 8 else 0


def _pillow_text(err: BaseException) -> str:
    # PIL names the buffer by its address ("<_io.BytesIO object at 0x…>"): drop it, so the same file gives the
    # same reason in every run (and in every partition)
    return re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(err))


def _decode_pil(data: bytes, fmt: str, max_pixels: int, limits: Limits | None,
                strict: bool = False) -> tuple[np.ndarray, dict]:
    facts: dict = {"format": fmt}
    noted: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as noted:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        try:  # the header's size, against our own limit (validate.max_pixels) rather than Pillow's words
            im = _open_unguarded(data, fmt)
        except Exception:
            raise ImageError("too_large", f"{_pillow_text(err)} (validate.max_pixels {max_pixels})",
                             limit="validate.max_pixels", facts=facts) from None
    except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
        raise
    except Exception as err:  # PIL raises many types for hostile headers
        raise ImageError("unreadable_header", f"{type(err).__name__}: {_pillow_text(err)}", facts=facts) from None
    w, h = im.size
    facts.update(width=max(w, 0), height=max(h, 0), mode=im.mode, channels=_CHANNELS.get(im.mode, 0),
                 format=im.format or fmt, bit_depth=_bit_depth(im))
    if w <= 0 or h <= 0:
        raise ImageError("bad_dimensions", f"{w}x{h}", facts=facts)
    if w * h > max_pixels:
        raise ImageError("too_large", f"{w}x{h} = {w * h} pixels > limit {max_pixels} (validate.max_pixels)",
                         limit="validate.max_pixels", facts=facts)
    # JPEG/WebP/TIFF carry the tag in the header; PNG may put eXIf after the pixels (read at load).
    # Pillow reports a TIFF's size already rotated and rotates its pixels itself at load.
    orientation = 0 if facts["format"] == "PNG" else _orientation(im)
    if orientation >= 5 and facts["format"] != "TIFF":
        facts.update(width=h, height=w)
    facts["orientation"] = orientation
    if limits is not None:
        try:
            limits.check(facts["width"], facts["height"])
        except ImageError as err:
            err.facts = facts
            raise
    facts["frames"] = _frames(im)
    try:
        with warnings.catch_warnings(record=True) as loading:
            warnings.simplefilter("always")
            im.load()
            if facts["format"] == "PNG":
                orientation = facts["orientation"] = _orientation(im)
            im = ImageOps.exif_transpose(im)
        noted = [*noted, *loading]
    except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
        raise
    except Exception as err:
        text = _pillow_text(err)
        reason = "truncated" if "truncat" in text.lower() or isinstance(err, OSError) else "undecodable"
        raise ImageError(reason, f"{type(err).__name__}: {text}", facts=facts) from None
    facts.update(width=im.size[0], height=im.size[1])
    if limits is not None:  # a PNG's eXIf is known only now; the sides are what they are
        limits.check(*im.size)
    if strict:
        said = [f"Pillow: {_pillow_text(m.message)}" for m in noted]
        if facts["format"] in ("JPEG", "MPO"):
            said += [t for t in [_jpeg_integrity(data)] if t]
        if said:
            raise ImageError("corrupt_data", "; ".join(dict.fromkeys(said)), facts=facts)
    try:
        pixels, facts["window"], share = _to_gray(im)
    except ImageError as err:  # non_finite_pixels
        err.facts = {**facts, **err.facts}
        raise
    except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
        raise
    except Exception as err:
        raise ImageError("undecodable", f"{type(err).__name__}: {err}", facts=facts) from None
    facts["transparent_share"] = round(share, 4)
    if facts["frames"] > 1:
        facts["warnings"] = f"multi_frame: {facts['frames']} frames, frame 0 used"
    if limits is not None:
        limits.check_transparency(share, facts)
    return pixels, facts


def _decode_dicom(data: bytes, max_pixels: int, limits: Limits | None) -> tuple[np.ndarray, dict]:
    facts: dict = {"format": "DICOM"}
    try:
        import pydicom  # noqa: F401

        from components.core.data import dicom
    except ImportError as err:  # pydicom missing in this environment
        raise ImageError("unsupported_format", f"DICOM needs pydicom ({err.name} is not installed): pip install "
                                               "pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg",
                         facts=facts) from None
    with warnings.catch_warnings():  # pydicom warns about odd values as it converts them (lazily)
        warnings.simplefilter("ignore")
        ds = dicom.read(data)
        try:
            facts.update(dicom.header_facts(ds))
        except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
            raise
        except Exception as err:
            raise ImageError("unreadable_header", f"DICOM header: {type(err).__name__}", facts=facts) from None
        try:
            if limits is not None and facts["width"] > 0 and facts["height"] > 0:
                limits.check(facts["width"], facts["height"])
            pixels, facts["window"] = dicom.decode(ds, max_pixels)
        except ImageError as err:
            err.facts = {**facts, **err.facts}
            raise
    facts.update(width=pixels.shape[1], height=pixels.shape[0], frames=1)
    return pixels, facts


def _decode(data: bytes, max_pixels: int, limits: Limits | None = None,
            strict: bool | None = None) -> tuple[np.ndarray, dict]:
    """Encoded bytes → (2-D uint8 pixels, facts); raises :class:`ImageError` with the facts known so far.

    ``strict`` (default: when ``limits`` are given, as predict and ``/predict`` give them) refuses pixels the
    decoder called corrupt (``corrupt_data``) and measures ``pixel_std`` (blank films); validate's
    :func:`inspect_bytes` is always strict. Preprocess, which reads validated files, is not."""
    if not data:
        raise ImageError("empty_file", "the file has 0 bytes")
    fmt = sniff_format(data[:132])
    if fmt is None:
        kinds = ", ".join(f for f in SUPPORTED_FORMATS) + " or DICOM"
        raise ImageError("not_an_image", f"the bytes are not {kinds} (checked by magic bytes)")
    if limits is not None:
        max_pixels = min(max_pixels, limits.max_pixels)
    strict = limits is not None if strict is None else strict
    if fmt == "DICOM":
        pixels, facts = _decode_dicom(data, max_pixels, limits)
    else:
        pixels, facts = _decode_pil(data, fmt, max_pixels, limits, strict=strict)
    if strict or limits is not None:
        facts["pixel_std"] = pixel_std(pixels)
    if limits is not None:  # validate records the number and its blank_film expectation judges it
        limits.check_blank(facts["pixel_std"], facts)
    return pixels, facts


def decode_with_facts(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                      limits: Limits | None = None) -> tuple[np.ndarray, dict]:
    """:func:`decode_gray` and what the decoder found (``warnings``: ``multi_frame: 3 frames, frame 0 used``)."""
    return _decode(data, max_pixels, limits)


def warning_list(facts: dict) -> list[str]:
    """The decoder's named warnings of ``facts`` as a list (the CLI's ``note``, the API's ``warnings``)."""
    return [w for w in str(facts.get("warnings") or "").split("; ") if w]


def _known(facts: dict) -> dict:
    return {k: v for k, v in facts.items() if k in _FACT_FIELDS and k not in ("bytes", "sha256", "decodable")}


def inspect_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """Facts about one encoded image; never raises for bad bytes (``decodable=False`` + reason).

    The pixels are decoded exactly as :func:`load_for_model` decodes them, so ``decodable`` means
    that training and serving can read the file too.
    """
    base = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        _, facts = _decode(data, max_pixels, strict=True)
    except ImageError as err:
        return ImageFacts(**base, **_known(err.facts), reason=err.reason, detail=err.detail)
    except MemoryError:
        return ImageFacts(**base, reason="out_of_memory", detail=OUT_OF_MEMORY)
    return ImageFacts(**base, **_known(facts), decodable=True)


def inspect_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    from components.core.data import storage

    try:
        data = storage.read_bytes(path)
    except OSError as err:
        return ImageFacts(reason="unreadable_file", detail=f"{type(err).__name__}: {err.strerror or err}")
    return inspect_bytes(data, max_pixels)


def decode_gray(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None,
                limits: Limits | None = None) -> np.ndarray:
    """Decode encoded bytes to a 2-D uint8 array, or raise :class:`ImageError`.

    ``draft_size`` is ignored (every format is fully decoded: see the module docstring).
    ``limits``: also refuse sides outside validate's range (predict, REST API).
    """
    return _decode(data, max_pixels, limits)[0]


def load_for_model(data: bytes, size: int, mode: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                   limits: Limits | None = None) -> np.ndarray:
    """Encoded bytes → ``size``×``size`` uint8, the exact input the saved model expects.

    With ``limits`` (predict, REST API) the sides and pixel count must pass validate's checks too.
    """
    return fit_square(decode_gray(data, max_pixels, limits=limits), size, mode)


@dataclass(frozen=True)
class Loaded:
    """One file read for the model (predict): the pixels, or the refusal (``reason: detail``); ``warnings``
    names what was used anyway (``multi_frame: 3 frames, frame 0 used``)."""

    pixels: np.ndarray | None
    error: str = ""
    warnings: str = ""


OUT_OF_MEMORY = "decoding needed more memory than this process could get (MemoryError)"


def read_capped(path: str | Path, max_bytes: int) -> bytes:
    """A local regular file's bytes, refused (``ImageError``) past ``max_bytes`` or when it is not a regular
    file: opened without blocking (a FIFO with no writer), its size checked before anything is read, and at
    most ``max_bytes + 1`` bytes read (a file that grows meanwhile)."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError("not_a_regular_file", "a FIFO, device or socket: only regular files are read")
        Limits.check_bytes(Limits(max_bytes=max_bytes), os.fstat(fd).st_size)
        data = fh.read(max_bytes + 1)
    Limits.check_bytes(Limits(max_bytes=max_bytes), len(data))
    return data


def load_file(path: str, size: int, mode: str, max_pixels: int, limits: Limits | None = None) -> Loaded:
    """Read and decode one file for the model; never raises for a bad file (any failure is the row's
    ``error``: a reason code and its detail). With ``limits`` (predict) a local file is read through
    :func:`read_capped` (``limits.max_bytes``)."""
    from components.core.data import storage

    try:
        try:
            if limits is not None and not storage.is_remote(path):
                data = read_capped(path, limits.max_bytes)
            else:
                data = storage.read_bytes(path)
        except OSError as err:
            return Loaded(None, f"unreadable_file: {err.strerror or err}")
        gray, facts = _decode(data, max_pixels, limits)
        return Loaded(fit_square(gray, size, mode), warnings=facts.get("warnings", ""))
    except ImageError as err:
        return Loaded(None, str(err))
    except MemoryError:
        return Loaded(None, f"out_of_memory: {OUT_OF_MEMORY}")
    except Exception as err:  # a decoder bug must not stop the batch: the row says what happened
        return Loaded(None, f"undecodable: {type(err).__name__}: {_pillow_text(err)}")


def _load_file(path: str, size: int, mode: str, max_pixels: int, limits: Limits | None = None) -> np.ndarray | str:
    loaded = load_file(path, size, mode, max_pixels, limits)
    return loaded.pixels if loaded.pixels is not None else loaded.error


def _map(fn, paths: list[str], workers: int, desc: str, pool: ProcessPoolExecutor | None) -> list:
    if workers <= 1 or len(paths) < 32:
        return [fn(p) for p in progress(paths, desc, total=len(paths))]
    chunk = max(1, min(32, len(paths) // (workers * 8)))
    if pool is not None:
        return list(progress(pool.map(fn, paths, chunksize=chunk), desc, total=len(paths)))
    with ProcessPoolExecutor(max_workers=workers) as own:
        return list(progress(own.map(fn, paths, chunksize=chunk), desc, total=len(paths)))


def decode_files(paths: list[str], size: int, mode: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 workers: int = 1, desc: str = "decode", limits: Limits | None = None,
                 pool: ProcessPoolExecutor | None = None) -> list[np.ndarray | str]:
    """Decode files for the model in ``workers`` processes: an array per file, or the error text
    (``reason: detail``). ``limits``: validate's side/pixel checks as well (predict). ``pool``: reuse these
    worker processes (a caller decoding many batches) instead of starting ``workers`` new ones."""
    fn = functools.partial(_load_file, size=size, mode=mode, max_pixels=max_pixels, limits=limits)
    return _map(fn, paths, workers, desc, pool)


def load_files(paths: list[str], size: int, mode: str, limits: Limits, workers: int = 1, desc: str = "decode",
               pool: ProcessPoolExecutor | None = None) -> list[Loaded]:
    """:func:`load_file` for each path (predict: validate's limits, strict), in ``workers`` processes."""
    fn = functools.partial(load_file, size=size, mode=mode, max_pixels=limits.max_pixels, limits=limits)
    return _map(fn, paths, workers, desc, pool)
