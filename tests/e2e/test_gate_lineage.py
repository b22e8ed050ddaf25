"""The gate against a real `mlflow server`: lineage-clean comparison ground, stale decisions refused at
promotion, shortcut risk blocking registration until a written acceptance."""

import json
import subprocess
import sys

import pytest

from benchmarks.processes import env
from components import evaluate, gate, ingest, preprocess, register, split, train, validate
from components.core.contract.errors import RefusedError
from components.core.contract.params.schema import parse_params
from components.core.registry import registry
from components.ops import promote
from tests.support import TRAIN_TINY, served_tracking, write_params

pytestmark = pytest.mark.slow

BASE = {
    "data": {"demo": {"patients_per_class": 20, "max_images_per_patient": 2, "min_side": 64, "max_side": 96}},
    "validate": {"workers": 1},
    "train": {**TRAIN_TINY, "phases": [{"epochs": 3, "trainable": "all", "lr": 0.003}]},
    # 2-3 validation patients per class: the conformal rank ceil(t * (n + 1)) keeps 0.5 (0.75 is refused)
    "evaluate": {"target_sensitivity": {"COVID19": 0.5, "PNEUMONIA": 0.5}, "bootstrap": {"resamples": 300},
                 "gradcam_per_class": 0, "top_losses": 0},
    "gate": {"min_accuracy": 0.0, "min_macro_f1": 0.0, "min_roc_auc": 0.0, "min_sensitivity": {},
             "min_comparison_patients": 2,
             "non_inferiority_margin": {"accuracy": 0.9, "macro_f1": 0.9, "macro_roc_auc": 0.9, "roc_auc": 0.9}},
}


SPLITS = {1: {"seed": 1, "test_fraction": 0.4}, 2: {"seed": 2, "test_fraction": 0.25}}


def make_params(**overrides):
    raw = json.loads(json.dumps(BASE))
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return parse_params(raw, "test params")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_tracking(tmp_path_factory.mktemp("gate-server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One demo data set split twice: the champion's split (seed 1, 40% of the patients held out for test) and
    the candidates' (seed 2, 25%): some of the new test patients trained the champion, some are new to it."""
    root = tmp_path_factory.mktemp("gate-data")
    ingest.run(make_params(), root / "raw")
    out = {}
    for seed in (1, 2):
        p = make_params(split=SPLITS[seed])
        split.run(p, root / "raw" / "manifest.csv", root / f"splits{seed}", root / f"reports{seed}")
        preprocess.run(p, root / f"splits{seed}", root / "raw", root / f"shards{seed}")
        out[seed] = root / f"shards{seed}"
    return root, out


def trained(p, shards, tmp):
    train.run(p, shards, tmp / "models", tmp / "state")
    evaluate.run(p, tmp / "models", shards, tmp / "eval", tmp / "metrics.json")
    return tmp


def gated(p, shards, tmp, name="gate.json"):
    return gate.run(p, tmp / "metrics.json", tmp / "models", shards, tmp / name, images=shards.parent / "raw")


@pytest.fixture(scope="module")
def champion(server, data, tmp_path_factory):
    _, shards = data
    p = make_params(split=SPLITS[1])
    tmp = trained(p, shards[1], tmp_path_factory.mktemp("champion"))
    g = gated(p, shards[1], tmp)
    assert g["passed"] and g["gated_against"] is None and g["comparison"]["status"] == "no_champion"
    r = register.run(p, tmp / "gate.json", tmp / "models", tmp / "metrics.json", tmp / "registration")
    promote.promote(p)
    return r["version"]


@pytest.fixture(scope="module")
def candidate(champion, data, tmp_path_factory):
    """Trained on another split of the same patients: some of its test patients trained the champion."""
    _, shards = data
    p = make_params(split=SPLITS[2])
    return p, trained(p, shards[2], tmp_path_factory.mktemp("candidate"))


def test_champion_training_patients_in_the_new_test_split_are_excluded(candidate, data, champion):
    p, tmp = candidate
    _, shards = data
    g = gated(p, shards[2], tmp)
    ground = g["comparison"]
    assert g["gated_against"] == champion and ground["status"] == "compared", ground
    assert ground["excluded"]["champion_trained_or_validated"] > 0  # the contamination the old gate missed
    assert ground["patients_used"] == ground["patients_total"] - ground["excluded"]["champion_trained_or_validated"]
    nis = [c for c in g["checks"] if c["kind"] == "non_inferiority"]
    assert nis and all(c["patients"] == ground["patients_used"] for c in nis if c["count"] == "patients")
    per_class = [c for c in nis if c["metric"].startswith("roc_auc.") and c["ci"] is not None]
    assert per_class and all(0 < c["positives"] < ground["patients_used"] for c in per_class)
    assert all(c["ci"] is not None or c["status"] != "passed" for c in nis)
    assert all({"power", "status", "count"} <= set(c) for c in nis)
    assert next(c for c in nis if c["metric"] == "accuracy")["ci"] is not None
    assert {"roc_auc.COVID19", "roc_auc.PNEUMONIA", "accuracy", "macro_f1", "macro_roc_auc"} == {
        c["metric"] for c in nis}
    assert set(g["operating_points"]) == {"COVID19", "PNEUMONIA"}
    assert g["operating_points"]["COVID19"]["expected_sensitivity"] >= 0.5
    print("gate (a), contaminated champion excluded:", json.dumps(ground))

    strict = p.model_copy(update={"gate": p.gate.model_copy(update={"min_comparison_patients": 1000})})
    g2 = gated(strict, shards[2], tmp, "gate-incomparable.json")
    assert not g2["passed"] and g2["comparison"]["status"] == "incomparable"
    (check,) = [c for c in g2["checks"] if c["kind"] == "comparison"]
    assert "incomparable" in check["check"] and "thresholds_only" in check["note"]
    lenient = strict.model_copy(update={"gate": strict.gate.model_copy(update={"on_incomparable": "thresholds_only"})})
    assert gated(lenient, shards[2], tmp, "gate-thresholds-only.json")["passed"]


def test_a_stale_gate_is_refused_at_promotion(candidate, data, champion, tmp_path):
    p, tmp = candidate
    _, shards = data
    # too few clean patients for a paired comparison here: decide on the thresholds (staleness is the point)
    p = p.model_copy(update={"gate": p.gate.model_copy(update={"min_comparison_patients": 1000,
                                                              "on_incomparable": "thresholds_only"})})
    gated(p, shards[2], tmp)
    v2 = register.run(p, tmp / "gate.json", tmp / "models", tmp / "metrics.json", tmp / "registration")["version"]
    other = trained(p.model_copy(update={"train": p.train.model_copy(update={"seed": 7})}), shards[2], tmp_path)
    assert gated(p, shards[2], other)["gated_against"] == champion
    v3 = register.run(p, other / "gate.json", other / "models", other / "metrics.json", other / "reg")["version"]
    assert promote.promote(p, version=v2)["champion"] == v2  # gated against the champion of the time: fine
    with pytest.raises(RefusedError, match=rf"gated against champion {champion}, but the champion is now {v2}"):
        promote.promote(p, version=v3)
    pf = write_params(tmp_path / "params.yaml", p)
    cli = subprocess.run([sys.executable, "-m", "cxr", "promote", "--params", str(pf), "--version", v3],
                         env=env(), capture_output=True, text=True)
    assert cli.returncode == 6 and "stale" in cli.stderr
    # re-gated against the current champion (what `dvc repro` does after a promotion): same version, fresh decision
    gated(p, shards[2], other)
    again = register.run(p, other / "gate.json", other / "models", other / "metrics.json", other / "reg")
    assert again["version"] == v3 and again["reused_version"] and again["gated_against"] == v2
    out = promote.promote(p, version=v3)
    assert out["changed"] and not out["forced"] and out["record"]["from"] == v2
    forced = promote.promote(p, version=v2, force=True, reason="bring back v2 for the audit, ticket 42")
    tags = registry.client().get_model_version(p.registry.model_name, v2).tags
    assert forced["forced"] and tags["promotion_forced"] == "true" and tags["promoted_from"] == v3
    assert tags["promoted_reason"].startswith("bring back v2") and tags["promoted_by"]


def test_shared_sample_is_blocked_for_shortcut_risk_until_accepted(server, shared_sample, tmp_path):
    p = make_params(data={"source": "dir", "path": str(shared_sample)}, registry={"model_name": "cxr-shared"},
                    validate={"workers": 2})
    ingest.run(p, tmp_path / "raw")
    summary = validate.run(p, tmp_path / "raw", tmp_path / "validated", tmp_path / "vreports")
    assert summary["source_bias_audit"]["flagged"]
    split.run(p, tmp_path / "validated" / "manifest.csv", tmp_path / "splits", tmp_path / "sreports")
    preprocess.run(p, tmp_path / "splits", tmp_path / "raw", tmp_path / "shards")
    trained(p, tmp_path / "shards", tmp_path)
    validation = tmp_path / "vreports" / "summary.json"
    pf = write_params(tmp_path / "params.yaml", p)
    cli = subprocess.run([sys.executable, "-m", "cxr", "gate", "--params", str(pf), "--metrics",
                          str(tmp_path / "metrics.json"), "--model-dir", str(tmp_path / "models"), "--shards",
                          str(tmp_path / "shards"), "--images", str(tmp_path / "raw"), "--validation", str(validation),
                          "--out", str(tmp_path / "gate.json"), "--strict"], env=env(), capture_output=True, text=True)
    assert cli.returncode == 6 and "shortcut risk" in cli.stderr  # --strict: a failed gate fails the command
    blocked = json.loads((tmp_path / "gate.json").read_text())
    assert not blocked["passed"] and any(c["kind"] == "shortcut" and not c["passed"] for c in blocked["checks"])
    r = register.run(p, tmp_path / "gate.json", tmp_path / "models", tmp_path / "metrics.json", tmp_path / "reg")
    assert not r["registered"] and "shortcut risk" in r["reason"]

    reason = "Accepted by the study lead: a pipeline demo on one public sample, never used on patients"
    ok = p.model_copy(update={"gate": p.gate.model_copy(update={"accept_shortcut_risk": reason})})
    g = gate.run(ok, tmp_path / "metrics.json", tmp_path / "models", tmp_path / "shards", tmp_path / "gate.json",
                 images=tmp_path / "raw", validation=validation)
    assert g["passed"] and g["shortcut_accepted"] == reason
    r = register.run(ok, tmp_path / "gate.json", tmp_path / "models", tmp_path / "metrics.json", tmp_path / "reg",
                     validation=validation)
    mv = registry.client().get_model_version("cxr-shared", r["version"])
    assert mv.tags["shortcut_risk_accepted"] == reason and reason in mv.description
    assert registry.load(f"models:/cxr-shared/{r['version']}").describe()["model_card"].count(reason) == 1
