"""End to end on the Kaggle DICOM layouts: a generated RSNA-layout tree and a SIIM-layout tree go through
ingest, validate, split, preprocess, train (small_cnn, 32 px, 2 epochs) and evaluate; then nothing written
outside the data folders (reports, model folder, metrics, model card) may contain a raw patient id."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from components import evaluate, ingest, preprocess, split, train, validate
from components.core.contract.fsutil import read_json
from components.core.contract.params.schema import parse_params
from components.core.registry import modelcard
from tests.kaggle_layouts import rsna_tree, siim_tree
from tests.support import TRAIN_TINY

pytestmark = pytest.mark.slow


def params(path: Path, classes: list[str]):
    return parse_params({
        "data": {"source": "dir", "path": str(path), "classes": classes},
        "validate": {"workers": 1, "bias_audit": {"folds": 3}},
        "split": {"val_fraction": 0.2, "test_fraction": 0.25},
        "train": {**TRAIN_TINY, "phases": [{"epochs": 2, "trainable": "all", "lr": 0.003}]},
        "evaluate": {"bootstrap": {"resamples": 20}, "gradcam_per_class": 1, "top_losses": 4},
    })


def pipeline(p, tmp: Path) -> dict:
    out = {"ingest": ingest.run(p, tmp / "data/raw", tmp / "reports/ingest"),
           "validate": validate.run(p, tmp / "data/raw", tmp / "data/validated", tmp / "reports/validation"),
           "split": split.run(p, tmp / "data/validated/manifest.csv", tmp / "data/splits", tmp / "reports/split")}
    preprocess.run(p, tmp / "data/splits", tmp / "data/raw", tmp / "data/shards")
    out["train"] = train.run(p, tmp / "data/shards", tmp / "models", tmp / "state", track=False)
    out["evaluate"] = evaluate.run(p, tmp / "models", tmp / "data/shards", tmp / "reports/evaluate",
                                   tmp / "reports/metrics.json", track=False)
    card = modelcard.render(name="cxr", metrics=read_json(tmp / "reports/metrics.json"), train=out["train"],
                            params=p.model_dump(mode="json", by_alias=True),
                            validation=read_json(tmp / "reports/validation/summary.json"),
                            split=read_json(tmp / "reports/split/summary.json"),
                            ingest=read_json(tmp / "reports/ingest/summary.json"))
    (tmp / "reports/model_card.md").write_text(card)
    out["card"] = card
    return out


def leaks(tmp: Path, ids: list[str]) -> list[str]:
    """Files outside data/ (and the source tree, kaggle/) that contain one of ``ids`` (text and binary alike)."""
    found = []
    for f in sorted(tmp.rglob("*")):
        if f.is_file() and f.relative_to(tmp).parts[0] not in ("data", "kaggle"):
            blob = f.read_bytes()
            found += [f"{f.relative_to(tmp)}: {i}" for i in ids if i.encode() in blob]
    return found


def test_rsna_layout_end_to_end_without_patient_ids_outside_the_data_folder(tmp_path):
    pids = [str(uuid.UUID(int=1000 + i)) for i in range(26)]
    labels = {pid: ("PNEUMONIA", "NORMAL")[i % 2] for i, pid in enumerate(pids[:24])}
    labels.update({pids[24]: "OTHER", pids[25]: "OTHER"})
    rsna_tree(tmp_path / "kaggle" / "rsna-pneumonia-detection-challenge", labels, test_images=2)
    out = pipeline(params(tmp_path / "kaggle", ["NORMAL", "PNEUMONIA"]), tmp_path)
    assert out["ingest"]["per_class"] == {"NORMAL": 12, "PNEUMONIA": 12}
    assert out["ingest"]["skipped"]["by_reason"] == {"excluded_label": 2, "unlabelled_test_image": 2,
                                                     "unused_file": 1}
    v = out["validate"]
    assert v["usable"] == 24 and v["formats"] == {"DICOM": 24}
    assert v["deidentification"]["identifying_attributes"] == {"PatientID": 24, "PatientName": 24}
    # the tree puts every PNEUMONIA film in AP and every NORMAL one in PA: the audit must say so
    assert v["source_bias_audit"]["flagged"] and "view_position_AP" in v["source_bias_audit"]["features"]
    assert out["split"]["splits"]["test"]["images"] >= 4 and out["split"]["leakage"] == {"patient_id": 0, "sha256": 0}
    assert out["train"]["resize"] == "crop" and out["evaluate"]["n"] == out["split"]["splits"]["test"]["images"]
    assert "DICOM files: 24" in out["card"]
    assert leaks(tmp_path, [*pids, "test-patient-000", "test-patient-001"]) == []


def test_siim_layout_end_to_end_without_patient_ids_outside_the_data_folder(tmp_path):
    studies = {}
    for i in range(24):
        label = ("Typical Appearance", "Atypical Appearance", "Indeterminate Appearance")[i % 3] if i % 2 \
            else "Negative for Pneumonia"
        # studies i and i + 20 belong to one patient (same PatientID); studies 0, 5, 10, 15, 20 hold two images
        studies[f"st{i:02d}"] = {"label": label, "images": 1 + (i % 5 == 0), "patient": f"SIIM-PAT-{i % 20:03d}"}
    siim_tree(tmp_path / "kaggle" / "siim-covid19-detection", studies, test_images=1)
    out = pipeline(params(tmp_path / "kaggle", ["COVID19", "NORMAL"]), tmp_path)
    assert out["ingest"]["per_class"] == {"COVID19": 14, "NORMAL": 15}
    assert out["ingest"]["patients"] == 20 and out["ingest"]["patient_id_origin"] == {"dicom": 29}
    assert out["validate"]["usable"] == 29 and out["split"]["leakage"] == {"patient_id": 0, "sha256": 0}
    assert out["evaluate"]["n"] == out["split"]["splits"]["test"]["images"]
    assert leaks(tmp_path, [f"SIIM-PAT-{i:03d}" for i in range(20)]) == [], json.dumps(out["ingest"])
