import json
import shutil

import numpy as np
import pytest

from components import evaluate, train
from components.core.data import shards
from components.core.eval.gradcam import gradcam, overlay
from components.core.model import models
from tests.support import replace_split, train_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    train.run(train_params(), tiny_shards, out / "models", out / "state", track=False)
    return out / "models"


def test_evaluate_writes_every_report(trained, tiny_shards, tmp_path):
    summary = evaluate.run(train_params(), trained, tiny_shards, tmp_path / "eval", tmp_path / "metrics.json",
                           track=False)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["confusion_matrix"]["labels"] == ["COVID19", "NORMAL", "PNEUMONIA"]
    assert sum(map(sum, m["confusion_matrix"]["matrix"])) == m["n"] == len(shards.load_split(tiny_shards, "test").y)
    assert set(m["per_class"]["NORMAL"]) == {"precision", "recall", "specificity", "f1", "support", "roc_auc",
                                             "positive_patients", "negative_patients"}
    # every per-class interval carries the patients it rests on, and none collapses to a point
    ci = m["ci"]["per_class"]["NORMAL"]
    assert ci["sensitivity"]["positives"] == m["per_class"]["NORMAL"]["positive_patients"]
    assert ci["specificity"]["negatives"] == m["per_class"]["NORMAL"]["negative_patients"]
    assert all(e["low"] < e["high"] for e in (m["ci"]["accuracy"], ci["sensitivity"], ci["specificity"]))
    assert summary["accuracy"] == m["accuracy"] and m["split"] == "test"
    for f in ("predictions.csv", "roc.csv", "classification_report.txt", "top_losses.json"):
        assert (tmp_path / "eval" / f).is_file()
    for f in ("confusion.png", "confusion_normalized.png", "roc.png", "pr.png", "reliability.png",
              "training_curves.png", "top_losses.png", "gradcam.png"):
        assert (tmp_path / "eval" / "plots" / f).stat().st_size > 1000
    # the shortcut stress tests: the block the gate reads, with the evidence of every flag
    sc = m["shortcut"]
    assert set(sc) >= {"enabled", "shortcut_risk", "flags", "sets", "source_probe", "central_field", "summary",
                       "seconds"}
    assert summary["shortcut_risk"] == sc["shortcut_risk"] and isinstance(sc["shortcut_risk"], bool)
    assert set(sc["sets"]) == {"test"} and sc["sets"]["test"]["n"] == m["n"]
    for test in ("centre_masked", "border_probe", "attention_outside"):
        r = sc["sets"]["test"][test]
        assert "not_run" in r or {"value", "chance", "threshold", "p_value", "flagged"} <= set(r)
    assert all({"set", "test", "value", "threshold", "chance", "p_value", "what"} <= set(f) for f in sc["flags"])
    flat = evaluate._shortcut_metrics(sc)
    assert flat["shortcut_risk"] == float(sc["shortcut_risk"]) and "shortcut_test_centre_masked" in flat


def test_a_target_the_validation_patients_cannot_keep_is_refused(trained, tiny_shards, tmp_path):
    from components.core.contract.errors import ParamsError

    p = train_params()
    p = p.model_copy(update={"evaluate": p.evaluate.model_copy(update={"target_sensitivity": {"PNEUMONIA": 0.95}})})
    with pytest.raises(ParamsError, match=r"PNEUMONIA = 0.95 cannot be kept with \d positive validation patients"):
        evaluate.run(p, trained, tiny_shards, tmp_path / "eval", tmp_path / "metrics.json", track=False)
    assert not (tmp_path / "metrics.json").exists()


def test_class_missing_from_test_is_noted(trained, tiny_shards, tmp_path):
    broken = tmp_path / "shards"
    shutil.copytree(tiny_shards, broken)
    test = shards.load_split(broken, "test")
    keep = test.y != 0
    replace_split(broken, "test", np.asarray(test.x)[keep], test.y[keep], test.rows[keep])
    summary = evaluate.run(train_params(), trained, broken, tmp_path / "eval", tmp_path / "m.json", track=False)
    assert summary["recall"]["COVID19"] is None
    assert any("COVID19 has no test images" in n for n in summary["notes"])


def test_gradcam_shape_range_and_overlay(trained, tiny_shards):
    model = models.load_model(trained / "model.keras")
    x = shards.load_split(tiny_shards, "test").x[:3]
    heat = gradcam(model, x)
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    rgb = overlay(x[0, ..., 0], heat[0])
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8


def test_shortcut_tests_can_be_turned_off(trained, tiny_shards, tmp_path):
    p = train_params()
    p = p.model_copy(update={"evaluate": p.evaluate.model_copy(update={
        "shortcut": p.evaluate.shortcut.model_copy(update={"enabled": False}), "gradcam_per_class": 0})})
    summary = evaluate.run(p, trained, tiny_shards, tmp_path / "eval", tmp_path / "m.json", track=False)
    m = json.loads((tmp_path / "m.json").read_text())
    assert summary["shortcut_risk"] is False and m["shortcut"]["enabled"] is False
    assert m["shortcut"]["flags"] == [] and "turned off" in m["shortcut"]["summary"]
    assert not (tmp_path / "eval" / "plots" / "gradcam.png").exists()


def test_shortcut_metrics_reach_mlflow(trained, tiny_shards, tmp_path, mlflow_store):
    import mlflow

    p = train_params()
    evaluate.run(p, trained, tiny_shards, tmp_path / "eval", tmp_path / "m.json", track=False)
    result = json.loads((tmp_path / "m.json").read_text())
    mlflow.set_experiment("cxr")
    with mlflow.start_run() as run:
        pass
    result["run_id"] = run.info.run_id
    evaluate._log(p, result, tmp_path / "eval", tmp_path / "m.json")
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert logged.metrics["shortcut_risk"] == float(result["shortcut"]["shortcut_risk"])
    assert logged.metrics["shortcut_test_centre_masked"] == \
        result["shortcut"]["sets"]["test"]["centre_masked"]["value"]
    assert logged.tags["shortcut_risk"] == str(result["shortcut"]["shortcut_risk"]).lower()
