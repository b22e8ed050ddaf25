"""DICOM for the one image decoder (``components.core.data.images`` dispatches here), and a
de-identification audit.

Reading (pydicom; compressed transfer syntaxes through the pylibjpeg plugins):

- **Detection.** A Part 10 file (128-byte preamble + ``DICM``) is DICOM whatever its name. A bare
  dataset without preamble (old PACS exports, some ``.dcm`` files) is accepted only when its first
  element is a group 0002/0008 tag with a plausible explicit or implicit VR encoding
  (:func:`looks_like_bare_dataset`) *and* pydicom then reads it with ``force=True`` into a dataset
  with image attributes (Rows/Columns or SOP Class UID); anything else stays ``not_an_image``. Without
  that gate, ``force=True`` would "read" almost any byte string as a dataset.
- **Refused with a reason** (an :class:`~components.core.data.images.ImageError` code): no pixel data
  (``dicom_no_pixels``), several frames (``dicom_multiframe``), a transfer syntax nothing can decode
  or whose plugin is missing (``dicom_unsupported_transfer_syntax``, naming the syntax and what to
  install), a photometric interpretation other than MONOCHROME1/2, RGB, YBR_* or PALETTE COLOR
  (``dicom_unsupported_photometric``), pixel data shorter than the header says (``truncated``), a
  header pydicom cannot parse (``unreadable_header``), Rows×Columns over the limit (``too_large``,
  checked before any pixel is decoded).
- **Pixels → 8 bits**, in DICOM order: stored values (pydicom applies BitsStored masking and the sign
  of PixelRepresentation) → Modality LUT (rescale slope/intercept or LUT sequence,
  ``apply_modality_lut``) → VOI LUT sequence, else the *first* window centre/width
  (``apply_voi_lut``, ``prefer_lut=True``, ``index=0``; VOILUTFunction honoured) mapped linearly from
  the VOI output range to 0..255 → MONOCHROME1 inverted (so air is always dark, as in MONOCHROME2).
  No VOI in the header: the robust percentile window of ``images.robust_window`` (as for any
  high-bit-depth image); 8-bit data without rescale or VOI is kept as stored.
- **Facts** for the manifest: view position, modality, manufacturer, study/series UIDs, pixel spacing
  (PixelSpacing, else ImagerPixelSpacing, ``"row x col"`` mm), transfer syntax, the raw patient id
  and its digest (:func:`patient_digest`), and the de-identification audit.

**Nothing identifying leaves through an error.** Error details are written here from tag names and
numbers; when a pydicom message is passed on, the values of every attribute in
:data:`PHI_KEYWORDS` found in the file are cut out of it first (:func:`_scrub`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np

from components.core.data.pixels import ImageError, check_finite, robust_window

# Identifying attributes checked by :func:`audit`: the DICOM PS3.15 Annex E basic application
# level confidentiality profile (Table E.1-1), restricted to attributes that name or date a
# person, an institution, a device or an encounter and occur in projection radiography headers.
# Not counted: UIDs (the profile re-maps them consistently; we need them to group studies/series),
# free-text descriptions (StudyDescription, SeriesDescription, ProtocolName: usually "CHEST PA").
PHI_KEYWORDS: tuple[str, ...] = (
    # patient
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "PatientAddress", "PatientTelephoneNumbers",
    "MilitaryRank", "BranchOfService", "EthnicGroup", "Occupation", "MedicalRecordLocator",
    "AdditionalPatientHistory", "PatientComments", "ResponsiblePerson", "ResponsibleOrganization",
    "CountryOfResidence", "RegionOfResidence",
    # staff and institution
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician", "OperatorsName",
    "ScheduledPerformingPhysicianName",
    # encounter: dates, times, numbers
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime", "AcquisitionTime",
    "ContentTime", "AcquisitionDateTime", "InstanceCreationDate", "InstanceCreationTime",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "AccessionNumber", "StudyID",
    "RequestAttributesSequence", "AdmissionID", "PerformedProcedureStepID", "RequestedProcedureID",
    # device
    "StationName", "DeviceSerialNumber", "DetectorID", "PlateID",
)
_PHI = frozenset(PHI_KEYWORDS)

_MONO = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420", "PALETTE COLOR")
# What to install for each family of compressed transfer syntaxes (pydicom's own message lists
# every possible plugin; this names the one we pin).
_PLUGIN_HINT = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg + pylibjpeg-libjpeg",       # JPEG baseline/extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg + pylibjpeg-libjpeg",      # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg + pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.8": "pylibjpeg + pylibjpeg-libjpeg",       # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg + pylibjpeg-openjpeg",      # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg + pylibjpeg-openjpeg",     # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg + pylibjpeg-rle (or none: pydicom decodes RLE itself)",
}
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV"}


# ---------------------------------------------------------------- detection
def has_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_like_bare_dataset(head: bytes) -> bool:
    """A dataset without preamble: the first tag is (0002,xxxx) or (0008,xxxx), little endian,
    followed by an explicit VR we know or an implicit 4-byte length that fits a header element."""
    if len(head) < 8:
        return False
    group, element = int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or element > 0x1FFF:
        return False
    if head[4:6] in _VRS:
        return True
    return int.from_bytes(head[4:8], "little") < 1024  # implicit VR: a short length


# ---------------------------------------------------------------- reading
def _quiet(pydicom) -> None:
    """pydicom warns *and logs* invalid values, quoting them ("Invalid value for VR PN: 'DOE^JANE'"):
    identifying values would reach the step's log. Reading validation off, its logger to errors."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def read(data: bytes):
    """Parse a DICOM byte string (pixels are decoded later, by :func:`decode`)."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    _quiet(pydicom)

    preamble = has_preamble(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=not preamble)
            ds._cxr_cut_short = _cut_short(ds)  # before any access converts the raw elements
            if not preamble and not any(k in ds for k in ("Rows", "Columns", "SOPClassUID", "PixelData")):
                raise ImageError("not_an_image", "no image magic bytes, and not a DICOM dataset either")
            meta = ds.file_meta if hasattr(ds, "file_meta") else None
            if meta is None or "TransferSyntaxUID" not in meta:  # bare dataset: the syntax it was read with
                from pydicom.dataset import FileMetaDataset

                implicit, little = getattr(ds, "original_encoding", (True, True))
                ds.file_meta = meta if meta is not None else FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                                  ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    except ImageError:
        raise
    except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
        raise
    except Exception as err:  # pydicom raises many types for hostile bytes
        # pydicom's message is not passed on: it may quote element values (names, ids).
        raise ImageError("unreadable_header", f"DICOM header: {type(err).__name__} while parsing the dataset") \
            from None
    return ds


def _first_line(err: Exception, limit: int = 160) -> str:
    """First line of an exception message (pass it through :func:`_scrub` before showing it)."""
    return str(err).splitlines()[0][:limit] if str(err) else ""


def _phi_values(ds) -> list[str]:
    """Text of identifying attributes (to cut them out of messages; never returned or stored)."""
    values: list[str] = []
    for elem in _iter_elements(ds):
        if elem.keyword in _PHI and elem.VR != "SQ":
            try:
                raw = elem.value
                text = raw.decode("latin-1", "replace") if isinstance(raw, bytes) else str(raw)
            except Exception:
                continue
            for part in [text, *text.replace("^", "\\").split("\\")]:
                part = part.strip()
                if len(part) >= 2:
                    values.append(part)
    return sorted(set(values), key=len, reverse=True)


def _scrub(text: str, ds) -> str:
    for value in _phi_values(ds):
        text = text.replace(value, "<redacted>")
    return text


def _iter_elements(ds):
    """Every element, nested sequences included; elements that fail to convert are skipped."""
    try:
        elems = list(ds.iterall())
    except Exception:
        elems = []
        for tag in list(ds.keys()):
            try:
                elems.append(ds[tag])
            except Exception:
                continue
    return elems


def _text(ds, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(ds, keyword: str, default: int = 0) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except Exception:
        return default


def patient_digest(patient_id: str, salt: str = "") -> str:
    """A stable pseudonym for a patient id (16 hex digits of SHA-256 over ``salt`` + id).

    Unsalted, a short numeric MRN can be found again by trying every number: pass a secret salt
    wherever the digest leaves the data folder for less trusted places.
    """
    if not patient_id:
        return ""
    return hashlib.sha256(f"cxr-patient:{salt}:{patient_id}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------- de-identification audit
@dataclass(frozen=True)
class PhiAudit:
    """What a de-identification check needs, without any value: keyword names and counts."""

    present: tuple[str, ...] = ()        # PHI_KEYWORDS present with a non-empty value (sorted)
    burned_in_annotation: str = ""       # "YES" | "NO" | "" (absent) | other value as written
    private_tags: int = 0                # private (odd-group) elements, nested sequences included

    @property
    def count(self) -> int:
        return len(self.present)

    @property
    def clean(self) -> bool:
        """No identifying attribute, no private tag, and the header says no text is burned in."""
        return not self.present and not self.private_tags and self.burned_in_annotation == "NO"

    def as_dict(self) -> dict:
        return {"phi_count": self.count, "phi_attributes": list(self.present),
                "burned_in_annotation": self.burned_in_annotation, "private_tags": self.private_tags}


def _non_empty(elem) -> bool:
    try:
        value = elem.value
    except Exception:
        return True  # present but unparseable: count it, better safe
    if value is None:
        return False
    if elem.VR == "SQ":
        return len(value) > 0
    if isinstance(value, bytes):
        return bool(value.strip(b"\0 "))
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return any(str(v).strip() for v in value)
    return bool(str(value).strip())


def audit(ds) -> PhiAudit:
    """Which identifying attributes (:data:`PHI_KEYWORDS`) are present and non-empty, the
    BurnedInAnnotation flag and the number of private tags, for a pydicom dataset. Values are
    never returned."""
    present, private = set(), 0
    for elem in _iter_elements(ds):
        if elem.tag.is_private:
            private += 1
        elif elem.keyword in _PHI and _non_empty(elem):
            present.add(elem.keyword)
    burned = _text(ds, "BurnedInAnnotation").upper()[:16]
    return PhiAudit(tuple(sorted(present)), burned, private)


def audit_bytes(data: bytes) -> PhiAudit:
    """:func:`audit` of encoded DICOM bytes (raises ``ImageError`` when they are not DICOM)."""
    return audit(read(data))


# ---------------------------------------------------------------- facts and pixels
def header_facts(ds) -> dict:
    """ImageFacts fields from the header (no pixel is decoded)."""
    ts = ds.file_meta.TransferSyntaxUID
    spacing = _text(ds, "PixelSpacing") or _text(ds, "ImagerPixelSpacing")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    pid = _text(ds, "PatientID")
    found = audit(ds)
    return {
        "format": "DICOM",
        "width": cols, "height": rows,
        "channels": _int(ds, "SamplesPerPixel", 1),
        "mode": _text(ds, "PhotometricInterpretation"),
        "bit_depth": _int(ds, "BitsStored", _int(ds, "BitsAllocated")),
        "modality": _text(ds, "Modality")[:16],
        "view_position": _text(ds, "ViewPosition").upper()[:16],
        "manufacturer": _text(ds, "Manufacturer")[:64],
        "study_uid": _text(ds, "StudyInstanceUID")[:64],
        "series_uid": _text(ds, "SeriesInstanceUID")[:64],
        "pixel_spacing": " x ".join(spacing.split("\\")[:2]) if spacing else "",
        "transfer_syntax": str(ts),
        "dicom_patient_id": pid[:64],
        "dicom_patient_digest": patient_digest(pid),
        "phi_count": found.count,
        "phi_attributes": ";".join(found.present),
        "burned_in_annotation": found.burned_in_annotation,
        "private_tags": found.private_tags,
    }


def _cut_short(ds) -> str:
    """The tag of the last element when the file ended inside its value (pydicom keeps the
    shorter value silently), else ''. Only the tag is named, never the value."""
    try:
        tags = list(ds.keys())
        if not tags:
            return ""
        raw = ds.get_item(tags[-1])
        length, value = getattr(raw, "length", None), getattr(raw, "value", None)
        if isinstance(value, bytes) and isinstance(length, int) and 0 <= length < 0xFFFFFFFF and len(value) < length:
            return f"{tags[-1]} ({len(value)} of {length} bytes)"
    except Exception:
        return ""
    return ""


def _check_decodable(ds, max_pixels: int) -> None:
    """Every refusal that needs only the header, before any pixel is decoded."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    cut = getattr(ds, "_cxr_cut_short", "")
    if cut:
        raise ImageError("truncated", f"the file ends inside element {cut}")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "Rows" in ds and "Columns" in ds:  # an image header, but the file ends before its pixels
            raise ImageError("truncated", f"the header describes a {_int(ds, 'Columns')}x{_int(ds, 'Rows')} image "
                                          "but the file ends before its Pixel Data element")
        raise ImageError("dicom_no_pixels", "the DICOM file has no Pixel Data element (a report, SR or "
                                            "presentation state, not an image)")
    frames = _int(ds, "NumberOfFrames", 1)
    if frames > 1:
        raise ImageError("dicom_multiframe", f"{frames} frames: one image per file is expected (export the frame "
                                             "to use as its own file)")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows <= 0 or cols <= 0:
        raise ImageError("bad_dimensions", f"Rows {rows}, Columns {cols}")
    if rows * cols > max_pixels:
        raise ImageError("too_large", f"{cols}x{rows} = {rows * cols} pixels > limit {max_pixels} "
                                      "(validate.max_pixels)", limit="validate.max_pixels")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if photometric not in _MONO + _COLOUR:
        raise ImageError("dicom_unsupported_photometric",
                         f"PhotometricInterpretation {photometric or '(missing)'!r}: expected MONOCHROME1/2, RGB, "
                         "YBR_* or PALETTE COLOR")
    samples = _int(ds, "SamplesPerPixel", 1)
    if samples != (1 if photometric in (*_MONO, "PALETTE COLOR") else 3):
        raise ImageError("undecodable", f"SamplesPerPixel {samples} does not fit PhotometricInterpretation "
                                        f"{photometric!r}")
    uid = UID(str(ds.file_meta.TransferSyntaxUID))
    name = f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise ImageError("dicom_unsupported_transfer_syntax",
                         f"transfer syntax {name}: no pixel decoder exists for it in pydicom (video and private "
                         "syntaxes are not images we read); export the image uncompressed or as JPEG 2000") from None
    except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
        raise
    except Exception as err:
        raise ImageError("dicom_unsupported_transfer_syntax", f"transfer syntax {name}: {type(err).__name__}") \
            from None
    if not decoder.is_available:
        hint = next((v for k, v in _PLUGIN_HINT.items() if str(uid).startswith(k)), "a pydicom pixel data plugin")
        missing = "; ".join(decoder.missing_dependencies)
        raise ImageError("dicom_unsupported_transfer_syntax",
                         f"transfer syntax {name} needs a decoder plugin that is not installed: pip install {hint} "
                         f"(pydicom's options: {missing})")


def _pixel_array(ds):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
        raise
    except Exception as err:
        text = _scrub(_first_line(err, 200), ds)
        short = any(s in text.lower() for s in ("less than expected", "truncat", "end of", "doesn't match",
                                                "insufficient", "eof"))
        raise ImageError("truncated" if short else "undecodable", f"DICOM pixel data: {type(err).__name__}: {text}") \
            from None


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not np.isfinite([lo, hi]).all() or hi <= lo:
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _voi(values: np.ndarray, ds) -> tuple[np.ndarray, str] | None:
    """The VOI LUT or first window of the header, mapped to 0..255; None when the header has none."""
    from pydicom.pixels import apply_voi_lut

    has_lut = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0
    has_window = bool(_text(ds, "WindowCenter")) and bool(_text(ds, "WindowWidth"))
    if not (has_lut or has_window):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if has_lut:
                item = ds.VOILUTSequence[0]
                n, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
                table = apply_voi_lut(np.arange(first, first + n, dtype=np.int64), ds, index=0)
                lo, hi = float(np.min(table)), float(np.max(table))
                out = apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0)
                how = "dicom_voi_lut"
            else:
                width = float(_text(ds, "WindowWidth").split("\\")[0])
                if width < 1:
                    return None  # an invalid window: the robust window instead
                probe = apply_voi_lut(np.array([-1e15, 1e15]), ds, index=0, prefer_lut=False)
                lo, hi = float(np.min(probe)), float(np.max(probe))
                out = apply_voi_lut(values.astype(np.float64), ds, index=0, prefer_lut=False)
                how = "dicom_window"
    except Exception:
        return None  # a malformed VOI module: fall back to the robust window rather than refuse the image
    return _to_uint8(np.asarray(out), lo, hi), how


def decode(ds, max_pixels: int) -> tuple[np.ndarray, str]:
    """2-D uint8 pixels (air dark) and how they were windowed; raises ``ImageError``."""
    from PIL import Image
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    _check_decodable(ds, max_pixels)
    arr = _pixel_array(ds)
    photometric = _text(ds, "PhotometricInterpretation").upper()
    try:
        if photometric in _MONO:
            if arr.ndim != 2:
                raise ImageError("undecodable", f"a {photometric} image with shape {arr.shape}")
            values = apply_modality_lut(arr, ds)
            check_finite(values)  # float pixel data, or a rescale that overflowed
            identity = values is arr
            windowed = _voi(values, ds)
            if windowed is not None:
                gray, how = windowed
            elif identity and arr.dtype == np.uint8:
                gray, how = arr, "none"
            else:
                gray, how = robust_window(values)
            if photometric == "MONOCHROME1":
                gray, how = 255 - gray, how + "+inverted"
            return np.ascontiguousarray(gray, dtype=np.uint8), how
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageError("undecodable", f"a {photometric} image with shape {arr.shape}")
        if arr.dtype != np.uint8:
            bits = max(8, _int(ds, "BitsStored", 16)) if photometric != "PALETTE COLOR" else 16
            arr = np.clip(arr.astype(np.float64) / (2 ** bits - 1) * 255, 0, 255).round().astype(np.uint8)
        return np.asarray(Image.fromarray(arr, "RGB").convert("L"), dtype=np.uint8), "none"
    except ImageError:
        raise
    except MemoryError:  # not the file's fault: the caller says so (out_of_memory)
        raise
    except Exception as err:
        raise ImageError("undecodable", f"DICOM pixels: {type(err).__name__}: {_scrub(_first_line(err), ds)}") \
            from None
