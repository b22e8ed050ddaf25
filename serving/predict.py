"""Batch prediction: a file, a folder or a CSV of images → ``preds.csv``.

Columns: ``path,predicted_label,prob_<CLASS>…,positive_<CLASS>…,ood_score,unlike_training_data,error``
(``ood_score``/``unlike_training_data``: the out-of-distribution score and flag of
:mod:`components.core.eval.ood`, empty for a model without a reference). An unreadable image gets its reason in
``error`` and empty probabilities; it never stops the batch. Images go through the decoder validate
uses, with validate's limits (``limits``: min/max side, max pixels; the CLI passes
``Limits.from_config(params.validate_)``), so an image validate would quarantine (a 1×1 thumbnail,
a 9000×9000 scan, a multi-frame DICOM) gets ``error`` = ``reason: detail`` naming the limit instead
of a prediction. DICOM files (``.dcm`` or any name given explicitly) are read too; the error text
never carries identifying DICOM values. CSV paths are resolved against the
CSV's folder and must stay inside ``root`` (default: that folder): ``../`` cannot escape it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.contract.errors import DataError
from components.core.contract.fsutil import atomic_path
from components.core.data.images import IMAGE_SUFFIXES, Limits, decode_files
from components.core.registry.registry import ModelBundle


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def list_inputs(input_path: str | Path, root: str | Path | None = None) -> list[tuple[str, Path | None, str]]:
    """(shown path, file or None, error) per input image."""
    src = Path(input_path)
    if not src.exists():
        raise DataError(f"--input {src} does not exist (an image, a folder of images, or a CSV with a path column)")
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [(p.relative_to(src).as_posix(), p, "") for p in files]
    if src.suffix.lower() != ".csv":
        return [(src.name, src, "")]
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    if "path" not in df.columns:
        raise DataError(f"{src}: the CSV needs a 'path' column")
    base = Path(root) if root else src.parent
    out = []
    for rel in df["path"]:
        p = Path(rel) if Path(rel).is_absolute() else src.parent / rel
        if not _inside(p, base):
            out.append((rel, None, f"outside_root: {rel} resolves outside {base}"))
        else:
            out.append((rel, p, ""))
    return out


def predict_arrays(bundle: ModelBundle, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return predict_with_ood(bundle, x, batch_size)[0]


def predict_with_ood(bundle: ModelBundle, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, OOD scores or None) for uint8 images (N × S × S or N × S × S × 1), in batches."""
    if len(x) == 0:
        return np.zeros((0, len(bundle.classes)), np.float32), (np.zeros(0) if bundle.ood is not None else None)
    x = x[..., None] if x.ndim == 3 else x
    parts = [bundle.infer_ood(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    probs = np.concatenate([p for p, _ in parts])
    return probs, (np.concatenate([s for _, s in parts]) if bundle.ood is not None else None)


def run(bundle: ModelBundle, input_path: str | Path, output: str | Path, root: str | Path | None = None,
        batch_size: int = 64, workers: int | None = None, limits: Limits | None = None) -> dict:
    """Predict every input image; ``limits`` default to validate's defaults (:class:`Limits`)."""
    limits = limits or Limits()
    items = list_inputs(input_path, root)
    todo = [(i, str(f)) for i, (_, f, err) in enumerate(items) if f is not None and not err]
    decoded = decode_files([f for _, f in todo], bundle.image_size, bundle.resize, limits.max_pixels,
                           workers=workers or min(2, os.cpu_count() or 1), desc="predict", limits=limits)
    errors = {i: err for i, (_, f, err) in enumerate(items) if err}
    good_idx, arrays = [], []
    for (i, _), d in zip(todo, decoded, strict=True):
        if isinstance(d, str):
            errors[i] = d
        else:
            good_idx.append(i)
            arrays.append(d)
    proba, scores = predict_with_ood(bundle, np.stack(arrays) if arrays else np.zeros((0, 1, 1), np.uint8), batch_size)
    flags = [f"positive_{c}" for c in bundle.thresholds]
    rows = [{"path": shown, "predicted_label": "", **{f"prob_{c}": None for c in bundle.classes},
             **dict.fromkeys(flags), "ood_score": None, "unlike_training_data": None, "error": errors.get(i, "")}
            for i, (shown, _, _) in enumerate(items)]
    for k, (i, p) in enumerate(zip(good_idx, proba, strict=True)):
        rows[i]["predicted_label"] = bundle.classes[int(np.argmax(p))]
        rows[i].update({f"prob_{c}": round(float(v), 6) for c, v in zip(bundle.classes, p, strict=True)})
        rows[i].update({f"positive_{c}": d for c, d in bundle.decide(p).items()})
        if scores is not None:
            rows[i]["ood_score"] = round(float(scores[k]), 4)
            rows[i]["unlike_training_data"] = bundle.ood.flag(scores[k])
    with atomic_path(output) as tmp:
        pd.DataFrame(rows, columns=["path", "predicted_label", *[f"prob_{c}" for c in bundle.classes], *flags,
                                    "ood_score", "unlike_training_data", "error"]).to_csv(tmp, index=False)
    flagged = sum(1 for r in rows if r["unlike_training_data"] is True)
    return {"output": str(output), "images": len(items), "predicted": len(good_idx), "errors": len(errors),
            "unlike_training_data": flagged if scores is not None else None,
            "model": bundle.describe() | {"metrics": None}}
