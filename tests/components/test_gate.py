"""gate (the step): the report's shape, --strict, shortcut and external checks, on a local sqlite store."""

import json

import pytest

from components import evaluate, gate, train
from components.core.contract.errors import RefusedError
from tests.conftest import sqlite_tracking, train_params


@pytest.fixture(scope="module")
def candidate(tiny_shards, tmp_path_factory, _migrated_mlflow_db):
    tmp = tmp_path_factory.mktemp("gate-candidate")
    with sqlite_tracking(tmp, _migrated_mlflow_db) as mp:
        p = params()
        train.run(p, tiny_shards, tmp / "models", tmp / "state")
        evaluate.run(p, tmp / "models", tiny_shards, tmp / "eval", tmp / "metrics.json")
        yield tmp, mp


def params(**gate_cfg):
    p = train_params()
    ev = p.evaluate.model_copy(update={"target_sensitivity": {"PNEUMONIA": 0.9}, "gradcam_per_class": 0,
                                       "bootstrap": p.evaluate.bootstrap.model_copy(update={"resamples": 200})})
    g = p.gate.model_copy(update={"min_accuracy": 0.0, "min_macro_f1": 0.0, "min_roc_auc": 0.0, **gate_cfg})
    return p.model_copy(update={"gate": g, "evaluate": ev})


def test_first_model_is_gated_on_thresholds_of_the_served_decision(candidate, tiny_shards):
    tmp, _ = candidate
    g = gate.run(params(min_sensitivity={"PNEUMONIA": 0.0}), tmp / "metrics.json", tmp / "models", tiny_shards,
                 tmp / "gate.json")
    assert g["passed"] and g["comparison"] == {"status": "no_champion"} and g["gated_against"] is None
    (sens,) = [c for c in g["checks"] if c["metric"] == "sensitivity.PNEUMONIA"]
    metrics = json.loads((tmp / "metrics.json").read_text())
    # the gate scores the decision serving returns: evaluate's operating point on the test split
    assert sens["value"] == pytest.approx(metrics["operating_points"]["PNEUMONIA"]["sensitivity"], abs=1e-4)
    assert sens["ci"] is not None and sens["patients"] > 0
    assert set(g["operating_points"]) == {"PNEUMONIA"} and g["operating_points"]["PNEUMONIA"]["ci"]
    assert json.loads((tmp / "gate.json").read_text())["passed"] is True


def test_strict_turns_a_failed_gate_into_exit_6(candidate, tiny_shards):
    tmp, _ = candidate
    impossible = params(min_accuracy=1.0, use_lower_ci=True)
    with pytest.raises(RefusedError, match="the gate failed"):
        gate.run(impossible, tmp / "metrics.json", tmp / "models", tiny_shards, tmp / "strict.json", strict=True)
    report = json.loads((tmp / "strict.json").read_text())  # the report is written before the refusal
    assert not report["passed"] and report["failed"] == ["accuracy lower CI bound >= 1.0"]


def test_flagged_audit_and_external_minimums(candidate, tiny_shards, tmp_path):
    tmp, _ = candidate
    summary = {"source_bias_audit": {"flagged": True, "balanced_accuracy": 0.97, "chance_balanced_accuracy": 0.33}}
    (tmp_path / "validation.json").write_text(json.dumps(summary))
    g = gate.run(params(), tmp / "metrics.json", tmp / "models", tiny_shards, tmp_path / "g.json",
                 validation=tmp_path / "validation.json")
    assert not g["passed"] and g["failed"][0].startswith("shortcut risk: file metadata alone")
