"""The gate at demo scale (24 test patients), end to end with real `dvc repro`, `cxr promote` and `cxr gate` against
a real `mlflow server`: a better candidate passes, a moderately worse one fails and names the check, an equal
retrain is inconclusive and does not fail (issue 28)."""

import json

import numpy as np
import pytest
import yaml

from benchmarks.processes import copy_repo, sh
from tests.support import push_bias, served_tracking

pytestmark = pytest.mark.slow

# the demo's data as shipped (40 patients per class: 24 test patients; 30 epochs) at 32 px instead of 64 (the gate reads
# patients and probabilities, not pixels; with the bisection below the test went from 241 s to 170 s in the fresh CI),
# everything the gate does not read switched off; the gate's minimums at 0: the weak first champion must register
FAST = {
    "validate": {"workers": 1, "bias_audit": {"enabled": False}},
    "preprocess": {"workers": 1},
    "train": {"refresh_batchnorm": 50, "image_size": 32},
    "evaluate": {"gradcam_per_class": 0, "top_losses": 0, "external": [], "shortcut": {"enabled": False}},
    "gate": {"min_accuracy": 0.0, "min_macro_f1": 0.0, "min_roc_auc": 0.0, "min_sensitivity": {}},
}
# barely trained (one epoch: clearly below the 30-epoch model, not a constant predictor): the champion to beat
WEAK = [{"epochs": 1, "trainable": "all", "lr": 0.003}]


def set_params(repo, **changes) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():
        section, name = key.split(".")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def cli(repo, *args, check=True):
    return sh(["cxr", *args], repo, check=check)


def gate_report(repo, path="reports/gate.json") -> dict:
    return json.loads((repo / path).read_text())


def wrong_patients(repo, model_dir) -> set[str]:
    """The test patients the model in ``model_dir`` gets wrong on at least one image."""
    from components.core.data import shards
    from components.core.model import models

    test = shards.load_split(repo / "data/shards", "test")
    proba = np.asarray(shards.predict(models.load_model(model_dir / "model.keras"), test.x))
    patients = test.rows["patient_id"].astype(str).to_numpy()
    return set(patients[proba.argmax(axis=1) != test.y])


def pushed_worse(repo, out, want=(5, 6)):
    """The current model with one class's last-layer bias pushed until ``want`` more test patients are wrong, net:
    patients it newly gets wrong less those the push happens to put right. A bisection on the push for each class
    (the count grows with it, near enough), a few model loads instead of hundreds."""
    base = wrong_patients(repo, repo / "models")

    def more(cls: int, amount: float) -> int:
        push_bias(repo / "models", out, {cls: amount})
        now = wrong_patients(repo, out)
        return len(now - base) - len(base - now)

    for cls in range(3):
        low, high = 0.0, 30.0
        for _ in range(12):
            amount = (low + high) / 2
            got = more(cls, amount)
            if want[0] <= got <= want[1]:
                return out, got
            low, high = (amount, high) if got < want[0] else (low, amount)
    raise AssertionError(f"no bias push makes {want} more test patients wrong")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    with served_tracking(tmp_path_factory.mktemp("gate-demo-mlflow")) as srv:
        path = copy_repo(tmp_path_factory.mktemp("gate-demo"), {**FAST, "mlflow": {"tracking_uri": srv.uri}})
        yield path


def test_better_passes_worse_fails_and_an_equal_retrain_is_inconclusive(repo):
    normal = yaml.safe_load((repo / "params.yaml").read_text())["train"]["phases"]
    # a weak champion: one epoch
    set_params(repo, **{"train.phases": WEAK})
    sh(["dvc", "repro"], repo)
    assert gate_report(repo)["passed"] and cli(repo, "promote").returncode == 0
    # better: the same data trained properly, against the weak champion: every check passes
    set_params(repo, **{"train.phases": normal})
    sh(["dvc", "repro"], repo)
    better = gate_report(repo)
    nis = {c["metric"]: c for c in better["checks"] if c["kind"] == "non_inferiority"}
    assert better["comparison"]["status"] == "compared" and better["comparison"]["patients_used"] == 24
    assert better["decision"] == "passed" and better["passed"], [(m, c["status"], c["ci"]) for m, c in nis.items()]
    assert nis["accuracy"]["superior"]
    assert cli(repo, "promote").returncode == 0

    # worse: the champion's own run, its last layer's bias pushed until 5-6 more test patients are wrong
    _, more = pushed_worse(repo, repo / "pushed")
    cli(repo, "evaluate", "--model-dir", "pushed", "--out", "pushed/eval", "--metrics", "pushed/metrics.json",
        "--no-mlflow")
    failed = cli(repo, "gate", "--model-dir", "pushed", "--metrics", "pushed/metrics.json", "--out", "pushed/gate.json",
                 "--strict", check=False)
    worse = gate_report(repo, "pushed/gate.json")
    assert failed.returncode == 6 and "the gate failed" in failed.stderr, failed.stderr[-2000:]
    assert worse["comparison"]["status"] == "compared" and worse["decision"] == "failed"
    named = [c for c in worse["checks"] if c["kind"] == "non_inferiority" and c["status"] == "failed"]
    assert named and all(c["check"] in worse["failed"] and c["check"] in failed.stderr for c in named)
    assert any(c["metric"] == "accuracy" and c["ci"][1] < 0 for c in named), (more, named)
    print(f"worse by {more} patients:", [(c["metric"], c["ci"], c["note"]) for c in named])

    # an equal retrain: the same split, another seed
    set_params(repo, **{"train.seed": 7})
    sh(["dvc", "repro", "gate"], repo)  # (not register: the verdict is all this needs)
    equal = gate_report(repo)
    statuses = {c["metric"]: c["status"] for c in equal["checks"] if c["kind"] == "non_inferiority"}
    assert equal["comparison"]["status"] == "compared" and "failed" not in statuses.values(), statuses
    assert equal["decision"] == "inconclusive" and equal["passed"]  # params.yaml: on_underpowered thresholds_only
    assert "Inconclusive: 24 test patients" in equal["summary"] and "per check" in equal["summary"]
    print("equal retrain:", equal["summary"])
