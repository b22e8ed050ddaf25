"""`cxr monitor` (components/ops/monitor.py): a log written by the server's own writer, the tiny model's reference,
the HTML/JSON report, and the retraining trigger against the fake KFP REST API."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from components.core.contract.errors import CxrError
from components.core.model import ood
from components.ops import monitor
from serving.predlog import PredictionLog
from tests.e2e.kfp_fake import FakeKfp
from tests.support import tiny_params

ROOT = Path(__file__).resolve().parents[3]


def write_log(folder: Path, ref: ood.OodReference, n: int, seed: int, shifted: bool) -> float:
    """``n`` predictions like the server logs them: in-distribution, or from a brighter site full of OOD flags."""
    rng = np.random.default_rng(seed)
    log = PredictionLog(folder)
    share = ref.expected_class_share()
    for i in range(n):
        score = ref.threshold * 1.6 if shifted and i % 3 else float(rng.choice(ref.val_scores))
        j = int(rng.integers(len(ref.stats["mean"])))
        log.append({"type": "prediction", "request_id": f"{seed:04x}{i:028x}", "model": {"version": ""},
                    "label": str(rng.choice(list(share), p=list(share.values()))), "ood_score": score,
                    "unlike_training_data": score > ref.threshold,
                    "image": {"mean": float(ref.stats["mean"][j]) + (60 if shifted else 0),
                              "std": float(ref.stats["std"][j])}})
    log.close()
    return time.time()


def params(**monitor_cfg):
    return tiny_params(monitor={"min_predictions": 30, "retrain_on": ["ood_rate", "image_drift"], **monitor_cfg})


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return ood.OodReference.load(tiny_model_dir / ood.REFERENCE_FILE)


def test_in_distribution_log_is_ok_and_the_trigger_stays_silent(tiny_model_dir, reference, tmp_path):
    now = write_log(tmp_path / "log", reference, 80, 1, shifted=False)
    calls = []
    s = monitor.run(params(), tmp_path / "log", tmp_path / "out", model=str(tiny_model_dir), now=now + 1,
                    trigger=calls.append)
    assert s["verdict"] == "ok" and s["predictions"] == 80 and not calls and s["retraining"]["due"] is False
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["verdict"] == "ok" and saved["reference"]["method"].startswith("mahalanobis")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Prediction monitor" in html and "data:image/png;base64," in html


def test_shifted_log_is_due_and_calls_the_trigger(tiny_model_dir, reference, tmp_path):
    now = write_log(tmp_path / "log", reference, 80, 2, shifted=True)
    s = monitor.run(params(), tmp_path / "log", tmp_path / "out", model=str(tiny_model_dir), now=now + 1,
                    trigger=lambda summary: {"run_id": "run-42", "verdict_seen": summary["verdict"]})
    assert s["verdict"] == "retraining_due" and s["checks"]["ood_rate"]["rate"] > 0.6
    assert s["retraining"] == {"due": True, "submitted": True, "run_id": "run-42", "verdict_seen": "retraining_due"}
    assert "retraining due" in (tmp_path / "out" / "report.html").read_text()
    later = monitor.run(params(window_hours=0.0001), tmp_path / "log", tmp_path / "out2", model=str(tiny_model_dir),
                        now=now + 3600)
    assert later["verdict"] == "insufficient_data"  # the shifted hour is outside the window


def test_a_model_without_reference_is_a_clear_error(tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    (tmp_path / "m" / ood.REFERENCE_FILE).unlink()
    (tmp_path / "log").mkdir()
    with pytest.raises(CxrError, match="no OOD/drift reference"):
        monitor.run(params(), tmp_path / "log", tmp_path / "out", model=str(tmp_path / "m"))


def test_cli_monitor_submits_the_training_pipeline_to_kfp_when_due(tiny_model_dir, reference, tmp_path, capsys):
    from cxr.cli import main
    from pipelines import ops

    write_log(tmp_path / "log", reference, 60, 3, shifted=True)
    package = tmp_path / "cxr_training.yaml"  # compiled pipelines are built, not committed
    ops.compile_pipeline(package, ROOT / "params.yaml")
    fake = FakeKfp()
    try:
        code = main(["monitor", "--params", str(ROOT / "params.yaml"), "--log", str(tmp_path / "log"), "--out",
                     str(tmp_path / "out"), "--model", str(tiny_model_dir), "--kfp-host", fake.host,
                     "--package", str(package),
                     "--set", "monitor.min_predictions=30", "--set", "data.demo.patients_per_class=10",
                     # 10 patients per class: the validation split cannot keep params.yaml's 0.85 (checked whole)
                     "--set", "evaluate.target_sensitivity={COVID19: 0.5, PNEUMONIA: 0.5}"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["verdict"] == "retraining_due" and out["retraining"]["submitted"] is True
        (run,) = fake.runs.values()
        assert run["display_name"].startswith("cxr-training-retrain-")
        assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "cxr-training"
        assert out["retraining"]["run_id"] == run["run_id"]
    finally:
        fake.close()
