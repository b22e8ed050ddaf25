"""SIIM-FISABIO-RSNA COVID-19 Detection (Kaggle competition ``siim-covid19-detection``).

Layout (under any single wrapper folders)::

    train_study_level.csv   id=<study>_study, one-hot: Negative for Pneumonia, Typical Appearance,
                            Indeterminate Appearance, Atypical Appearance
    train_image_level.csv   id=<image>_image, boxes, label, StudyInstanceUID     (optional: cross-check)
    train/<study>/<series>/<image>.dcm
    test/<study>/<series>/<image>.dcm                                            (no labels: skipped)

**Labels** are per study: the one column set to 1. A study with none or several set is
``ambiguous_label`` (each of its images is skipped). Default mapping (:data:`ALIASES`): ``Negative
for Pneumonia`` → NORMAL; ``Typical``, ``Indeterminate`` and ``Atypical Appearance`` → COVID19 (they
are the grades of a COVID-19 reading); ``data.label_aliases`` remaps any of them and
``data.exclude_labels`` drops them (e.g. ``[Indeterminate Appearance]``). The raw column is kept in
the raw manifest (``source_label``).

**Patient ids.** One patient can have several studies, so the study id is not enough to keep a
patient in one split. Ingest reads each image's DICOM PatientID (the header only, never the pixels)
and links studies that share one: every image of such a group gets ``dicom:<digest>`` (the same
pseudonym validate gives DICOM patients, :func:`dicom.patient_digest`; the raw PatientID stays in
the files), origin ``dicom``. A study whose images carry no PatientID is its own patient,
``study:<study>`` (origin ``study``). Study, series and image names are the competition's
pseudonymous UIDs and stay as they are in paths.

Every file and row is accounted for: images of a study without a label row, study rows without an
image, image-level rows without an image or naming another study (``ambiguous_row``), malformed
rows, images not at ``train/<study>/<series>/``, test images, unused files.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from pathlib import Path

from components.core.contract.errors import DataError
from components.core.contract.progress import progress
from components.core.data.sources.base import Entry, Scan, read_table, shown
from components.core.data.sources.folder import account_rest, descend, walk_files

NAME = "siim"
SOURCE = "siim-covid19-detection"
STUDY_CSV, IMAGE_CSV, TRAIN, TEST = "train_study_level.csv", "train_image_level.csv", "train", "test"
NEGATIVE, TYPICAL, INDETERMINATE, ATYPICAL = ("Negative for Pneumonia", "Typical Appearance",
                                              "Indeterminate Appearance", "Atypical Appearance")
COLUMNS = (NEGATIVE, TYPICAL, INDETERMINATE, ATYPICAL)
ALIASES = {NEGATIVE: "NORMAL", TYPICAL: "COVID19", INDETERMINATE: "COVID19", ATYPICAL: "COVID19"}


def _is_base(folder: Path) -> bool:
    return (folder / STUDY_CSV).is_file() and (folder / TRAIN).is_dir()


def find(root: Path) -> Path | None:
    """The folder that holds the SIIM files (``root`` or a single wrapper below it), or None."""
    return descend(root, _is_base)


def expected(root: Path) -> str:
    return (f"{root}: not a SIIM COVID-19 layout: expected {STUDY_CSV} and {TRAIN}/<study>/<series>/<image>.dcm "
            "(as Kaggle's siim-covid19-detection unpacks)")


def _flag(value: str) -> bool | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x == 1 if x in (0, 1) else None


def _studies(base: Path, out: Scan) -> tuple[dict[str, str | None], dict[str, list[int]]]:
    """study → raw label (None: ambiguous), study → CSV lines."""
    df = read_table(base / STUDY_CSV, ("id", *COLUMNS), "the SIIM study table")
    labels: dict[str, str | None] = {}
    lines: dict[str, list[int]] = defaultdict(list)
    for line, values in enumerate(zip(df["id"].str.strip(), *(df[c] for c in COLUMNS), strict=True), start=2):
        sid, flags = values[0], [_flag(str(v).strip()) for v in values[1:]]
        if not sid.endswith("_study") or sid == "_study" or None in flags:
            out.skip(f"{STUDY_CSV}:{line}", "malformed_row",
                     "id must be <study>_study" if not sid.endswith("_study") or sid == "_study"
                     else f"the columns {list(COLUMNS)} must be 0 or 1")
            continue
        study = sid.removesuffix("_study")
        set_ = [c for c, f in zip(COLUMNS, flags, strict=True) if f]
        label = set_[0] if len(set_) == 1 else None
        if study in labels and labels[study] != label:
            label = None  # two rows for one study that disagree
        labels[study] = label
        lines[study].append(line)
    return labels, lines


def _image_rows(base: Path, out: Scan) -> dict[str, tuple[str, int]]:
    """image → (study named in train_image_level.csv, line); {} when the file is absent."""
    if not (base / IMAGE_CSV).is_file():
        return {}
    df = read_table(base / IMAGE_CSV, ("id", "StudyInstanceUID"), "the SIIM image table")
    rows: dict[str, tuple[str, int]] = {}
    for line, (iid, study) in enumerate(zip(df["id"].str.strip(), df["StudyInstanceUID"].str.strip(), strict=True),
                                        start=2):
        if not iid.endswith("_image") or iid == "_image" or not study:
            out.skip(f"{IMAGE_CSV}:{line}", "malformed_row", "id must be <image>_image, with a StudyInstanceUID")
            continue
        rows[iid.removesuffix("_image")] = (study, line)
    return rows


def header_patient_id(path: Path) -> str:
    """The PatientID of a DICOM file, read from the header only ('' when absent or unreadable).
    pydicom's value warnings (which quote values) are silenced, as in :mod:`components.core.data.dicom`."""
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"], force=True)
            return str(ds.get("PatientID", "") or "").strip()
    except Exception:  # unreadable: validate will say why; the study id names the patient meanwhile
        return ""


def _patients(entries: list[Entry], studies: list[str]) -> dict[str, tuple[str, str]]:
    """study → (patient id, origin): studies linked by a shared DICOM PatientID are one patient."""
    from components.core.data.dicom import patient_digest

    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for study in studies:
        root(f"s:{study}")
    for e in progress(entries, "siim patient ids"):
        pid = header_patient_id(e.src)
        if pid:
            a, b = root(f"s:{e.extra['study']}"), root(f"p:{pid}")
            if a != b:
                parent[a] = b
    groups: dict[str, list[str]] = defaultdict(list)
    for node in list(parent):
        groups[root(node)].append(node)
    out: dict[str, tuple[str, str]] = {}
    for members in groups.values():
        pids = sorted(m[2:] for m in members if m.startswith("p:"))
        group_studies = sorted(m[2:] for m in members if m.startswith("s:"))
        for study in group_studies:
            out[study] = ((f"dicom:{patient_digest(pids[0])}", "dicom") if pids
                          else (f"study:{group_studies[0]}", "study"))
    return out


def scan(base: Path, root: Path | None = None) -> Scan:
    if not _is_base(base):
        raise DataError(expected(base))
    where = "" if root is None or base == root else f" (under {shown(base.relative_to(root).as_posix())}/)"
    out = Scan(layout=f"{NAME}{where}", aliases=dict(ALIASES))
    labels, study_lines = _studies(base, out)
    image_rows = _image_rows(base, out)
    seen_images: set[str] = set()
    seen_studies: set[str] = set()
    no_image_row = 0
    for path, rel in walk_files(base / TRAIN, out, base):
        parts = rel.split("/")
        if len(parts) != 4:
            out.skip(rel, "outside_layout", f"expected {TRAIN}/<study>/<series>/<image>.dcm")
            continue
        study, image = parts[1], path.stem
        seen_images.add(image)
        seen_studies.add(study)
        if image in image_rows and image_rows[image][0] != study:
            out.skip(rel, "ambiguous_row", f"{IMAGE_CSV} line {image_rows[image][1]} puts this image in another study")
            continue
        if study not in labels:
            out.skip(rel, "image_without_label_row", f"no row {study}_study in {STUDY_CSV}")
            continue
        label = labels[study]
        if label is None:
            out.skip(rel, "ambiguous_label", f"{STUDY_CSV} line(s) {study_lines[study]}: not exactly one of "
                                             f"{list(COLUMNS)} set to 1")
            continue
        no_image_row += bool(image_rows) and image not in image_rows
        out.entries.append(Entry(src=path, dest=rel, raw_label=label, source=SOURCE,
                                 extra={"source_label": label, "study": study}))
    for study in sorted(set(labels) - seen_studies):
        for line in study_lines[study]:
            out.skip(f"{STUDY_CSV}:{line}", "label_row_without_image", f"no image under {TRAIN}/{study}/")
    for image, (study, line) in sorted(image_rows.items(), key=lambda kv: kv[1][1]):
        if image not in seen_images:
            out.skip(f"{IMAGE_CSV}:{line}", "label_row_without_image", f"no {TRAIN}/{study}/<series>/{image}.dcm")
    if no_image_row:
        out.warnings.append(f"{no_image_row} images have no row in {IMAGE_CSV} (their study's label is used)")
    if (base / TEST).is_dir():
        for _, rel in walk_files(base / TEST, out, base):
            out.skip(rel, "unlabelled_test_image", "the competition's test images have no labels")
    account_rest(base, {STUDY_CSV, IMAGE_CSV, TRAIN, TEST}, out, "unused_file",
                 "not part of the SIIM layout this ingest reads")
    patients = _patients(out.entries, sorted({e.extra["study"] for e in out.entries}))
    for e in out.entries:
        e.patient_id, e.patient_id_origin = patients[e.extra["study"]]
    return out
