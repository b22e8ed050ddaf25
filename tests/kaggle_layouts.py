"""Small folders in the layouts of the Kaggle DICOM competitions (RSNA pneumonia, SIIM COVID-19),
written with real DICOM files by pydicom (:mod:`tests.imagegen`). No download.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tests import imagegen

RSNA_CLASSES = {"PNEUMONIA": "Lung Opacity", "NORMAL": "Normal", "OTHER": "No Lung Opacity / Not Normal"}
SIIM_COLUMNS = ["Negative for Pneumonia", "Typical Appearance", "Indeterminate Appearance", "Atypical Appearance"]


def film(seed: int, size: int = 32, sick: bool = False) -> np.ndarray:
    """A uint8 chest-like film; ``sick`` adds a bright patch in the right lung (something to learn)."""
    arr = imagegen.chest(size, size, seed)
    if sick:
        arr[size // 3: 2 * size // 3, size // 5: size // 2] += 0.35
    return np.clip(arr * 255, 0, 255).astype(np.uint8)


def _dcm(path: Path, pixels: np.ndarray, *, patient_id: str = "", study: str = "", series: str = "",
         view: str = "PA", manufacturer: str = "") -> None:
    ds = imagegen.dicom_dataset(pixels, patient_id=patient_id, patient_name=patient_id, view=view)
    if study:
        ds.StudyInstanceUID = study
    if series:
        ds.SeriesInstanceUID = series
    if manufacturer:
        ds.Manufacturer = manufacturer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(imagegen.dicom_bytes(ds))


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def rsna_tree(root: Path, labels: dict[str, str], *, size: int = 32, boxes: dict[str, int] | None = None,
              test_images: int = 1, extra_box_rows: list[list] | None = None,
              extra_class_rows: list[list] | None = None, images: list[str] | None = None) -> Path:
    """``labels``: patientId → PNEUMONIA | NORMAL | OTHER. Each patient gets one image (unless ``images``
    names the patients that have one), box rows (``boxes[pid]`` boxes for PNEUMONIA, default 2) and a
    class row per box row, as in the competition's files."""
    boxes = boxes or {}
    box_rows, class_rows = [], []
    for i, (pid, label) in enumerate(labels.items()):
        n = boxes.get(pid, 2) if label == "PNEUMONIA" else 1
        for b in range(n):
            box = [10 + b, 20, 30, 40, 1] if label == "PNEUMONIA" else ["", "", "", "", 0]
            box_rows.append([pid, *box])
            class_rows.append([pid, RSNA_CLASSES[label]])
        if images is None or pid in images:
            _dcm(root / "stage_2_train_images" / f"{pid}.dcm", film(i, size, label == "PNEUMONIA"), patient_id=pid,
                 view="AP" if label == "PNEUMONIA" else "PA")
    for pid in images or []:
        if pid not in labels:
            _dcm(root / "stage_2_train_images" / f"{pid}.dcm", film(900 + len(pid), size), patient_id=pid)
    _csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"],
         box_rows + (extra_box_rows or []))
    _csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], class_rows + (extra_class_rows or []))
    for t in range(test_images):
        _dcm(root / "stage_2_test_images" / f"test-patient-{t:03d}.dcm", film(500 + t, size),
             patient_id=f"test-patient-{t:03d}")
    (root / "stage_2_sample_submission.csv").write_text("patientId,PredictionString\n")
    return root


def siim_tree(root: Path, studies: dict[str, dict], *, size: int = 32, test_images: int = 1,
              image_rows: bool = True, extra_study_rows: list[list] | None = None) -> Path:
    """``studies``: study id → {"label": one of SIIM_COLUMNS (or a list of flags), "images": n,
    "patient": DICOM PatientID or ''}. Images: train/<study>/<study>-s/<study>-i<k>.dcm."""
    study_rows, img_rows, seed = [], [], 0
    for study, spec in studies.items():
        flags = spec["label"] if isinstance(spec["label"], list) else [int(c == spec["label"]) for c in SIIM_COLUMNS]
        study_rows.append([f"{study}_study", *flags])
        sick = flags[0] == 0
        for k in range(spec.get("images", 1)):
            image = f"{study}-i{k}"
            seed += 1
            _dcm(root / "train" / study / f"{study}-s" / f"{image}.dcm", film(seed, size, sick),
                 patient_id=spec.get("patient", ""), study=f"1.2.3.{seed}")
            img_rows.append([f"{image}_image", "", "none 1 0 0 1 1", study])
    _csv(root / "train_study_level.csv", ["id", *SIIM_COLUMNS], study_rows + (extra_study_rows or []))
    if image_rows:
        _csv(root / "train_image_level.csv", ["id", "boxes", "label", "StudyInstanceUID"], img_rows)
    for t in range(test_images):
        _dcm(root / "test" / f"ts{t}" / f"ts{t}-s" / f"ts{t}-i.dcm", film(700 + t, size), patient_id=f"T{t}")
    (root / "sample_submission.csv").write_text("id,PredictionString\n")
    return root
