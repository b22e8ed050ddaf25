"""gate (the step): the report's shape, --strict, shortcut and external checks, on a local sqlite store."""

import json

import pytest

from components import evaluate, gate, register, train
from components.core.contract.errors import RefusedError
from components.ops import promote
from tests.support import push_bias, sqlite_tracking, train_params


@pytest.fixture(scope="module")
def candidate(tiny_shards, tmp_path_factory, _migrated_mlflow_db):
    tmp = tmp_path_factory.mktemp("gate-candidate")
    with sqlite_tracking(tmp, _migrated_mlflow_db) as mp:
        p = params()
        train.run(p, tiny_shards, tmp / "models", tmp / "state")
        evaluate.run(p, tmp / "models", tiny_shards, tmp / "eval", tmp / "metrics.json")
        yield tmp, mp


def _passed_copy(report):
    """The gate report as if it had passed (register only looks further when it did)."""
    data = json.loads(report.read_text())
    data["passed"] = True
    out = report.with_name("passed-" + report.name)
    out.write_text(json.dumps(data))
    return out


def params(**gate_cfg):
    p = train_params()
    # 1-2 validation patients per class: the conformal rank ceil(t * (n + 1)) keeps 0.5, not more
    ev = p.evaluate.model_copy(update={"target_sensitivity": {"PNEUMONIA": 0.5}, "gradcam_per_class": 0,
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
    assert sens["ci"] is not None and sens["ci"][0] < sens["ci"][1] and sens["count"] == "positive patients"
    assert sens["patients"] == metrics["per_class"]["PNEUMONIA"]["positive_patients"]
    op = g["operating_points"]["PNEUMONIA"]
    assert set(g["operating_points"]) == {"PNEUMONIA"} and op["gated"] is False
    assert op["threshold"] == metrics["thresholds"]["val"]["PNEUMONIA"]["threshold"]  # the exact float
    assert op["expected_sensitivity"] >= 0.5 and op["sensitivity_lower_bound"] < op["expected_sensitivity"]
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


@pytest.mark.slow
def test_a_same_split_retrain_is_inconclusive_not_worse(candidate, tiny_shards, tmp_path):
    """The first candidate becomes champion; a retrain on the same split with another seed is compared on the same
    few test patients: the report says what it would take, not "worse". (Last in the module: it makes a champion.)"""
    tmp, _ = candidate
    p = params(min_comparison_patients=2, on_underpowered="fail")
    gate.run(p, tmp / "metrics.json", tmp / "models", tiny_shards, tmp / "first.json")
    register.run(p, tmp / "first.json", tmp / "models", tmp / "metrics.json", tmp / "registration")
    promote.promote(p)
    again = gate.run(p, tmp / "metrics.json", tmp / "models", tiny_shards, tmp / "again.json")  # after its promotion
    assert again["comparison"]["status"] == "same_model" and again["passed"]  # not compared with itself
    assert again["candidate"]["weights_sha256"] == again["champion"]["weights_sha256"]
    train_summary = json.loads((tmp / "models" / "train_summary.json").read_text())
    assert train_summary["weights_sha256"] == again["candidate"]["weights_sha256"]  # stable through model.keras
    # the champion's own run, its weights changed: another model, compared whatever the run id says (the old gate
    # skipped the comparison by run id and passed it on the thresholds). 4 test patients here cannot show it worse:
    # tests/e2e/test_gate_demo.py fails such a model on the demo's 24
    pushed = push_bias(tmp / "models", tmp_path / "pushed", negate=True)  # wrong wherever the champion is right
    changed = gate.run(p, tmp / "metrics.json", pushed, tiny_shards, tmp_path / "changed.json")
    assert changed["candidate"]["run_id"] == again["candidate"]["run_id"]
    assert changed["candidate"]["weights_sha256"] != changed["champion"]["weights_sha256"]
    assert changed["comparison"]["status"] == "compared" and not changed["passed"], changed["comparison"]
    assert changed["decision"] != "passed" and any(c["kind"] == "non_inferiority" for c in changed["checks"])
    with pytest.raises(RefusedError, match="changed after training"):  # and register would not take it
        register.run(p.model_copy(update={"gate": p.gate.model_copy(update={"min_comparison_patients": 1000,
                                                                            "on_incomparable": "thresholds_only"})}),
                     _passed_copy(tmp_path / "changed.json"), pushed, tmp / "metrics.json", tmp_path / "reg")
    retrain = p.model_copy(update={"train": p.train.model_copy(update={"seed": 7})})
    # not logged to MLflow (logging the model costs seconds): the gate reads the candidate from its folder (model,
    # lineage.json, metrics), and a candidate without a run id is another run than the champion's, as a logged one is
    train.run(retrain, tiny_shards, tmp_path / "models", tmp_path / "state", track=False)
    evaluate.run(retrain, tmp_path / "models", tiny_shards, tmp_path / "eval", tmp_path / "metrics.json", track=False)
    g = gate.run(p, tmp_path / "metrics.json", tmp_path / "models", tiny_shards, tmp_path / "gate.json")
    nis = [c for c in g["checks"] if c["kind"] == "non_inferiority"]
    assert g["comparison"]["status"] == "compared" and nis
    assert {c["metric"] for c in nis} == {"accuracy", "macro_f1", "macro_roc_auc", "roc_auc.PNEUMONIA"}
    assert all(c["status"] in ("passed", "inconclusive") for c in nis), [(c["metric"], c["status"]) for c in nis]
    assert g["decision"] == "inconclusive" and not g["passed"]  # gate.on_underpowered: fail
    need = g["comparison"]["patients_needed"]
    assert need > g["comparison"]["patients_used"] and f"≈{need:,} such patients" in g["summary"]
    assert g["comparison"]["joint_power"] < g["min_power"] == 0.95
    assert all(c["patients_needed"] for c in nis if c["status"] == "inconclusive")
    print("same-split retrain:", g["summary"])
    demo = params(min_comparison_patients=2, on_underpowered="thresholds_only")
    assert gate.run(demo, tmp_path / "metrics.json", tmp_path / "models", tiny_shards, tmp_path / "demo.json")["passed"]
