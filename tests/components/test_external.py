"""External test sets: same code path as the main data, never used for training or thresholds."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components import evaluate, external, ingest, preprocess, split, train, validate
from components.core.data import manifest
from tests.support import TRAIN_TINY, tiny_params

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_held_out_part_of_the_shared_sample_as_an_external_set(shared_sample, tmp_path):
    m = pd.read_csv(shared_sample / "MANIFEST.csv")
    m["path"] = [str(shared_sample / p) for p in m["path"]]
    held_out = set(sorted(m["patient_id"].unique())[::3])  # a disjoint set of patients
    main, ext = m[~m["patient_id"].isin(held_out)], m[m["patient_id"].isin(held_out)]
    ext = pd.concat([ext, main.head(1).assign(patient_id="leaked")])  # one main-data image sneaks in
    main.to_csv(tmp_path / "main.csv", index=False)
    ext.to_csv(tmp_path / "external.csv", index=False)
    held = {"name": "held-out", "source": "dir", "path": str(tmp_path / "external.csv"), "root": str(shared_sample)}
    p = tiny_params(data={"source": "dir", "path": str(tmp_path / "main.csv"), "root": str(shared_sample)},
                    train=TRAIN_TINY,
                    evaluate={"external": [held], "bootstrap": {"resamples": 200},
                              "target_sensitivity": {"PNEUMONIA": 0.8}, "gradcam_per_class": 1, "top_losses": 4})
    ingest.run(p, tmp_path / "raw")
    validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "rv")
    split.run(p, tmp_path / "validated" / "manifest.csv", tmp_path / "splits", tmp_path / "rs")
    preprocess.run(p, tmp_path / "splits", tmp_path / "raw", tmp_path / "shards")
    summary = external.run(p, tmp_path / "validated" / "manifest.csv", tmp_path / "external")
    info = summary["sets"]["held-out"]
    assert info["removed_as_in_main_data"] == 1 and info["images"] == len(ext) - 1
    assert info["bias_audit_flagged"] is True  # same hospitals and formats as the main data: still shortcut-prone
    ext_rows = manifest.read(tmp_path / "external" / "held-out" / "test.csv")
    train_rows = manifest.read(tmp_path / "shards" / "train.csv")
    assert not set(ext_rows["sha256"]) & set(train_rows["sha256"])

    train.run(p, tmp_path / "shards", tmp_path / "models", tmp_path / "state", track=False)
    with_ext = evaluate.run(p, tmp_path / "models", tmp_path / "shards", tmp_path / "e1", tmp_path / "m1.json",
                            track=False, external=tmp_path / "external")
    m1 = json.loads((tmp_path / "m1.json").read_text())
    ext_m = m1["external"]["held-out"]
    assert ext_m["n"] == info["images"] and set(ext_m["per_source"]) == set(m["source_repo"])
    assert ext_m["ci"]["unit"] == "patient" and "PNEUMONIA" in ext_m["operating_points"]
    assert with_ext["external"]["held-out"]["n"] == info["images"]
    assert (tmp_path / "e1" / "plots" / "internal_vs_external.png").stat().st_size > 1000
    # thresholds come from the validation split only: the external set changes nothing about them
    evaluate.run(p, tmp_path / "models", tmp_path / "shards", tmp_path / "e2", tmp_path / "m2.json", track=False)
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert m1["thresholds"] == m2["thresholds"] and m2["external"] == {}
    assert m1["operating_points"] == m2["operating_points"] and m1["accuracy"] == m2["accuracy"]


def test_no_stage_before_evaluation_reads_external_data():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, s in stages.items() if any(str(d).startswith("data/external") for d in s.get("deps", []))}
    assert readers == {"evaluate", "register"}
    assert not any("data/external" in s["cmd"] for n, s in stages.items() if n in ("train", "preprocess", "split"))


def test_real_data_gets_no_synthetic_external_set_unless_asked_for(tmp_path):
    """params.yaml's demo-site-b (synthetic films) with data.source dir: skipped, so it can neither be evaluated
    nor feed the source probe (on the shared sample it used to flag every class and block registration)."""
    (tmp_path / "main.csv").write_text("path,label,sha256\nNORMAL/a.png,NORMAL,abc\n")
    demo_set = {"name": "demo-site-b", "source": "demo", "demo": {"patients_per_class": 2, "seed": 7}}
    p = tiny_params(data={"source": "dir", "path": str(tmp_path)}, evaluate={"external": [demo_set]})
    summary = external.run(p, tmp_path / "main.csv", tmp_path / "external")
    assert summary["sets"] == {} and "synthetic" in summary["skipped"]["demo-site-b"]
    assert not (tmp_path / "external" / "demo-site-b").exists()
