"""Generators of test images as real hospitals send them: DICOM (written by pydicom), 16-bit PNG/TIFF
with burned-in markers or padding strips, EXIF-oriented PNG/TIFF/JPEG/WebP.

Everything is generated offline and small (tens of pixels), so tests stay fast and need no data set. Also the
plain factories most tests use: random and film-like grey images, encoded bytes, broken files, file trees.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112


def chest(w: int = 80, h: int = 96, seed: int = 0) -> np.ndarray:
    """A chest-film-like float image in 0..1: bright body, two dark lungs, a brighter spine, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w), 0.65)
    for cx in (0.3 * w, 0.7 * w):
        lung = ((xx - cx) / (0.16 * w)) ** 2 + ((yy - 0.5 * h) / (0.3 * h)) ** 2 < 1
        img[lung] = 0.25
    img[:, int(0.46 * w):int(0.54 * w)] = 0.85
    return np.clip(img + rng.normal(0, 0.03, (h, w)), 0, 1)


def lung_mask(w: int = 80, h: int = 96) -> np.ndarray:
    """Where :func:`chest` draws lungs (shrunk a little, away from the noisy edges)."""
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), bool)
    for cx in (0.3 * w, 0.7 * w):
        mask |= ((xx - cx) / (0.12 * w)) ** 2 + ((yy - 0.5 * h) / (0.25 * h)) ** 2 < 1
    return mask


def deep(w: int = 80, h: int = 96, lo: int = 1000, hi: int = 3000, seed: int = 0) -> np.ndarray:
    """:func:`chest` as 12-bit-like values stored in uint16 (``lo``..``hi``)."""
    return np.rint(lo + chest(w, h, seed) * (hi - lo)).astype(np.uint16)


def with_marker(arr: np.ndarray, kind: str = "spot", value: int = 65535) -> np.ndarray:
    """A burned-in marker (a small bright letter-sized block, top left) or a padding strip (right edge)."""
    out = arr.copy()
    h, w = out.shape
    if kind == "spot":
        out[2:2 + max(2, h // 12), 2:2 + max(2, w // 12)] = value
    elif kind == "strip":
        out[:, w - max(2, w // 10):] = value
    else:
        raise ValueError(kind)
    return out


def encode16(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    """A uint16 array as a 16-bit grayscale PNG or TIFF."""
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16)).save(buf, format=fmt)
    return buf.getvalue()


def asymmetric(w: int = 48, h: int = 32) -> np.ndarray:
    """Dark image with a bright block in the top-left corner: rotations and flips are visible."""
    arr = np.full((h, w), 20, np.uint8)
    arr[: h // 3, : w // 3] = 230
    return arr


def with_orientation(arr: np.ndarray, orientation: int, fmt: str = "PNG") -> bytes:
    """Encode ``arr`` as stored pixels, with an EXIF orientation tag that says how to show them."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "WEBP":
        kwargs["lossless"] = True
    Image.fromarray(arr).save(buf, format=fmt, exif=exif, **kwargs)
    return buf.getvalue()


# ---------------------------------------------------------------- DICOM (pydicom writes it)
def dicom_dataset(pixels: np.ndarray | None = None, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                  signed: bool = False, slope: float | None = None, intercept: float | None = None,
                  window: tuple[float, float] | None = None, frames: int = 1, view: str = "PA",
                  patient_name: str = "", patient_id: str = "", identifying: bool = False,
                  private: bool = False, burned_in: str | None = None):
    """A DX dataset around ``pixels`` (2-D uint8/uint16/int16; None: no Pixel Data element).

    ``identifying`` adds a typical hospital header (birth date, institution, physician, dates,
    accession number, station, device serial number); ``private`` adds a private block.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1.2"
    ds.Modality = "DX"
    ds.Manufacturer = "ACME Imaging"
    ds.ViewPosition = view
    ds.PixelSpacing = [0.143, 0.143]
    if patient_name:
        ds.PatientName = patient_name
    if patient_id:
        ds.PatientID = patient_id
    if identifying:
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.InstitutionName = "St. Example Hospital"
        ds.ReferringPhysicianName = "WHO^DOCTOR"
        ds.StudyDate = "20240102"
        ds.StudyTime = "101010"
        ds.AccessionNumber = "ACC12345"
        ds.StationName = "XR-ROOM-3"
        ds.DeviceSerialNumber = "SN-0001"
    if private:
        block = ds.private_block(0x0011, "ACME private", create=True)
        block.add_new(0x01, "LO", "vendor detail")
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    if pixels is not None:
        arr = np.asarray(pixels)
        if frames > 1:
            arr = np.stack([arr] * frames)
            ds.NumberOfFrames = frames
        ds.Rows, ds.Columns = arr.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 8 if arr.dtype.itemsize == 1 else 16
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.PixelData = arr.tobytes()
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    return ds


def dicom_bytes(ds, preamble: bool = True) -> bytes:
    """Encode a dataset: DICOM Part 10 file (preamble + ``DICM`` + meta), or the bare dataset."""
    import pydicom

    buf = io.BytesIO()
    if preamble:
        ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
    else:
        ds = ds.copy()
        del ds.file_meta
        pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def dicom(pixels: np.ndarray | None = None, preamble: bool = True, **kwargs) -> bytes:
    return dicom_bytes(dicom_dataset(pixels, **kwargs), preamble)


def dicom_jpeg(eight: np.ndarray) -> bytes:
    """An 8-bit film as a DICOM with JPEG Baseline pixel data (encapsulated, quality 95)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    buf = io.BytesIO()
    Image.fromarray(eight).save(buf, format="JPEG", quality=95)
    ds = dicom_dataset(eight)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    return dicom_bytes(ds)


def dicom_j2k(pixels: np.ndarray, **kwargs) -> bytes:
    """A JPEG 2000 lossless DICOM (encoded by pylibjpeg-openjpeg through pydicom's ``compress``)."""
    from pydicom.uid import JPEG2000Lossless

    ds = dicom_dataset(pixels, **kwargs)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    return dicom_bytes(ds)


def dicom_with_syntax(pixels: np.ndarray, syntax: str, **kwargs) -> bytes:
    """Declare a transfer syntax without re-encoding (for syntaxes nothing here can decode)."""
    from pydicom.encaps import encapsulate

    ds = dicom_dataset(pixels, **kwargs)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([np.asarray(pixels).tobytes()])
    ds["PixelData"].VR = "OB"
    return dicom_bytes(ds)


def gray(w: int = 64, h: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def png_16bit(w: int = 64, h: int = 48) -> bytes:
    arr = (np.arange(w * h, dtype=np.uint16).reshape(h, w) * 7) % 4096
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # uint16 → 16-bit grayscale PNG
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header declares ``w``×``h`` with almost no pixel data (a decompression bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def film(w: int = 128, h: int = 128) -> np.ndarray:
    """A smooth film-like pattern (JPEG damage shows in it; random noise would hide it)."""
    yy, xx = np.mgrid[:h, :w]
    return ((np.sin(xx / 9) + np.cos(yy / 13)) * 60 + 128).astype(np.uint8)


def garbled_jpeg(w: int = 128, h: int = 128) -> bytes:
    """A JPEG with 100 zeroed bytes in its entropy-coded data: Pillow decodes it (garbled rows), libjpeg warns
    "Corrupt JPEG data: premature end of data segment"."""
    data = bytearray(encode(film(w, h), "JPEG"))
    mid = len(data) // 2
    data[mid:mid + 100] = bytes(100)
    return bytes(data)


def half_transparent_png(w: int = 64, h: int = 64) -> bytes:
    """An RGBA film whose left half has alpha 0."""
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, : w // 2] = 0
    return encode(np.dstack([film(w, h)] * 3 + [alpha]))


def multipage_tiff(pages: int = 3, w: int = 64, h: int = 64) -> bytes:
    frames = [Image.fromarray(np.roll(film(w, h), 7 * i, axis=0)) for i in range(pages)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def float_tiff_with_nan(w: int = 64, h: int = 64) -> bytes:
    """A 32-bit float TIFF with a 16×16 block of NaN (missing data)."""
    arr = np.linspace(0, 1000, w * h, dtype=np.float32).reshape(h, w)
    arr[:16, :16] = np.nan
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, format="TIFF")
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root
