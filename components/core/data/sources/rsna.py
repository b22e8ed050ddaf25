"""RSNA Pneumonia Detection Challenge (Kaggle competition ``rsna-pneumonia-detection-challenge``).

Layout (under any single wrapper folders)::

    stage_2_train_labels.csv          patientId,x,y,width,height,Target   (one row per box; Target 0: no box)
    stage_2_detailed_class_info.csv   patientId,class                     (Lung Opacity | Normal |
                                                                           No Lung Opacity / Not Normal)
    stage_2_train_images/<patientId>.dcm
    stage_2_test_images/<patientId>.dcm                                   (no labels: skipped, reported)

The highest ``stage_N`` present is read (``stage_1_*`` files from an old download are reported as
unused). One image per patientId; the patient id is the patientId.

**Labels.** The class comes from the detailed class info and must agree with the box table:
``Lung Opacity`` ⇔ ``Target`` 1. A patient whose rows disagree (two classes, or a class against its
Target) is skipped as ``ambiguous_label``; a patient with boxes but no class row is ``Lung
Opacity``; ``Target`` 0 without a class row cannot tell Normal from Not Normal and is skipped.
Default mapping (:data:`ALIASES`): ``Lung Opacity`` → PNEUMONIA, ``Normal`` → NORMAL; ``No Lung
Opacity / Not Normal`` (other abnormal films) is excluded unless ``data.label_aliases`` maps it
(e.g. to a class of its own). The raw class is kept in the raw manifest (``source_label``), with
the number of boxes (``boxes``).

**Patient ids stay in the data folder.** RSNA file names *are* patientIds, and file paths travel
into reports, predictions, the model card and MLflow. So an image is stored as
``stage_2_train_images/<digest>.dcm`` (the digest of its patientId, :func:`dicom.patient_digest`),
the raw manifest keeps the original name in ``source_file``, and skipped images are reported under
the same pseudonymous name (their real names go to ``data/raw/skipped_sources.csv``). Label rows
are reported by file and line number, never by patientId.

Every file and row is accounted for: images without a label row, label rows without an image,
malformed and ambiguous rows, test images, duplicate images of one patient, unused files.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from components.core.contract.errors import DataError
from components.core.data.sources.base import Entry, Scan, read_table, shown
from components.core.data.sources.folder import account_rest, descend, walk_files

NAME = "rsna"
SOURCE = "rsna-pneumonia-detection-challenge"
OPACITY, NORMAL, NOT_NORMAL = "Lung Opacity", "Normal", "No Lung Opacity / Not Normal"
ALIASES = {OPACITY: "PNEUMONIA", NORMAL: "NORMAL"}
DEFAULT_EXCLUDED = (NOT_NORMAL,)
_LABELS = re.compile(r"^stage_(\d+)_train_labels\.csv$", re.IGNORECASE)


def _stage(folder: Path) -> int | None:
    """The highest stage N with both ``stage_N_train_labels.csv`` and ``stage_N_train_images/``."""
    try:
        names = {p.name: p for p in folder.iterdir()}
    except OSError:
        return None
    stages = [int(m.group(1)) for n in names if (m := _LABELS.match(n))]
    for n in sorted(stages, reverse=True):
        if (folder / f"stage_{n}_train_images").is_dir():
            return n
    return None


def find(root: Path) -> Path | None:
    """The folder that holds the RSNA files (``root`` or a single wrapper below it), or None."""
    return descend(root, lambda p: _stage(p) is not None)


def expected(root: Path) -> str:
    return (f"{root}: not an RSNA pneumonia layout: expected stage_2_train_labels.csv, "
            "stage_2_detailed_class_info.csv and stage_2_train_images/<patientId>.dcm (as Kaggle's "
            "rsna-pneumonia-detection-challenge unpacks)")


def _pseudonym(folder: str, pid: str, suffix: str) -> str:
    from components.core.data.dicom import patient_digest

    return f"{folder}/{patient_digest(pid)}{suffix.lower()}"


class _Patient:
    __slots__ = ("boxes", "class_lines", "classes", "target_lines", "targets")

    def __init__(self) -> None:
        self.classes: set[str] = set()
        self.class_lines: list[int] = []
        self.targets: set[str] = set()
        self.target_lines: list[int] = []
        self.boxes = 0

    def label(self) -> tuple[str | None, str]:
        """(raw class, '') or (None, why it is ambiguous)."""
        if len(self.classes) > 1:
            return None, f"classes {sorted(self.classes)} in the class info"
        if len(self.targets) > 1:
            return None, "Target 0 and 1 in the box table"
        cls = next(iter(self.classes), None)
        target = next(iter(self.targets), None)
        if cls is None:
            if target == "1":
                return OPACITY, ""
            return None, "Target 0 and no class row: Normal or No Lung Opacity / Not Normal?"
        if target is not None and (target == "1") != (cls == OPACITY):
            return None, f"class {cls!r} but Target {target} in the box table"
        return cls, ""


def scan(base: Path, root: Path | None = None) -> Scan:
    stage = _stage(base)
    if stage is None:
        raise DataError(expected(base))
    where = "" if root is None or base == root else f" (under {shown(base.relative_to(root).as_posix())}/)"
    out = Scan(layout=f"{NAME}{where}", aliases=dict(ALIASES), default_excluded=DEFAULT_EXCLUDED)
    labels_name = f"stage_{stage}_train_labels.csv"
    info_name = f"stage_{stage}_detailed_class_info.csv"
    train_name, test_name = f"stage_{stage}_train_images", f"stage_{stage}_test_images"
    if not (base / info_name).is_file():
        raise DataError(f"{base}: {info_name} is missing; the RSNA layout needs it to tell Normal from "
                        "'No Lung Opacity / Not Normal' (both have Target 0 in the box table)")
    patients: dict[str, _Patient] = defaultdict(_Patient)
    boxes = read_table(base / labels_name, ("patientId", "Target"), "the RSNA box table")
    for line, (pid, target) in enumerate(zip(boxes["patientId"].str.strip(), boxes["Target"].str.strip(),
                                             strict=True), start=2):
        if not pid or target not in ("0", "1"):
            out.skip(f"{labels_name}:{line}", "malformed_row",
                     "empty patientId" if not pid else "Target must be 0 or 1")
            continue
        p = patients[pid]
        p.targets.add(target)
        p.target_lines.append(line)
        p.boxes += target == "1"
    info = read_table(base / info_name, ("patientId", "class"), "the RSNA class info")
    for line, (pid, cls) in enumerate(zip(info["patientId"].str.strip(), info["class"].str.strip(), strict=True),
                                      start=2):
        if not pid or not cls:
            out.skip(f"{info_name}:{line}", "malformed_row", "empty patientId" if not pid else "empty class")
            continue
        patients[pid].classes.add(cls)
        patients[pid].class_lines.append(line)

    seen: set[str] = set()
    for path, rel in walk_files(base / train_name, out, base):
        pid, suffix = path.stem, path.suffix
        shown_as = _pseudonym(train_name, pid, suffix)
        if pid in seen:
            out.skip(shown_as, "duplicate_patient_image", "a second image of this patientId (one image per patient)",
                     source_file=rel)
            continue
        seen.add(pid)
        if pid not in patients:
            out.skip(shown_as, "image_without_label_row", f"no row in {labels_name} or {info_name}", source_file=rel)
            continue
        label, why = patients[pid].label()
        if label is None:
            out.skip(shown_as, "ambiguous_label", why, source_file=rel)
            continue
        out.entries.append(Entry(src=path, dest=shown_as, raw_label=label, patient_id=pid, source=SOURCE,
                                 extra={"source_file": rel, "source_label": label,
                                        "boxes": str(patients[pid].boxes)}))
    for pid in sorted(set(patients) - seen):
        p = patients[pid]
        for name, lines in ((labels_name, p.target_lines), (info_name, p.class_lines)):
            for line in lines:
                out.skip(f"{name}:{line}", "label_row_without_image", f"no image of this patientId in {train_name}/")
    if (base / test_name).is_dir():
        for path, rel in walk_files(base / test_name, out, base):
            out.skip(_pseudonym(test_name, path.stem, path.suffix), "unlabelled_test_image",
                     "the competition's test images have no labels", source_file=rel)
    account_rest(base, {labels_name, info_name, train_name, test_name}, out, "unused_file",
                 f"not part of the stage {stage} RSNA layout this ingest reads")
    return out
