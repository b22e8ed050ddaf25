"""`dvc repro` after a task switch, then `dvc exp run` with another backbone, in a temporary git repository of
their own (test_dvc_repro.py has the first full repro and what runs on it): a second module, so that xdist's
``--dist loadfile`` runs the two long pipelines on another worker."""

import json

import pytest

from benchmarks.processes import TINY, copy_repo, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository whose data was ingested for the three demo classes: the switch must make ingest stale."""
    path = copy_repo(tmp_path_factory.mktemp("repo"), TINY)
    sh(["dvc", "repro", "ingest"], path)
    return path


def test_switching_to_two_classes_is_one_command(repo):
    """`cxr recipe apply kermany-2class`, then `dvc repro`: classes, operating points and gate agree."""
    raw = repo / "data/raw/manifest.csv"
    assert "COVID19" in raw.read_text()
    # one command; the --set values only keep this test short (fewer patients, no external set, no worker pools
    # or source-bias audit for 16 images: test_dvc_repro.py's first repro runs those)
    sh(["cxr", "recipe", "apply", "kermany-2class", "--set", "data.demo.patients_per_class=8",
        "--set", "evaluate.external=[]", "--set", "evaluate.target_sensitivity={PNEUMONIA: 0.5}",
        "--set", "validate.workers=1", "--set", "preprocess.workers=1",
        "--set", "validate.bias_audit={enabled: false}"], repo)
    run = sh(["dvc", "repro"], repo)
    assert "Running stage 'ingest'" in run.stdout and "Running stage 'gate'" in run.stdout
    assert "COVID19" not in raw.read_text()
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics["per_class"]) == {"NORMAL", "PNEUMONIA"}
    gate = json.loads((repo / "reports/gate.json").read_text())
    assert {c["metric"] for c in gate["checks"]} >= {"sensitivity.PNEUMONIA", "training_status"}
    assert set(gate["operating_points"]) <= {"PNEUMONIA"}


def test_experiment_with_another_backbone(repo):
    """On the finished two-class pipeline, `dvc exp run` of the train stage with another backbone: train runs
    again, nothing upstream does. One phase of one epoch only keeps the test short (the backbone is the
    experiment). The stages after train are not run here (30 s more): they re-run when train's output changes, as
    test_gate_demo.py's repros after a train change show."""
    exp = sh(["dvc", "exp", "run", "train", "-S", "train.backbone=mobilenetv3small", "-S",
              "train.freeze_batchnorm=true", "-S", "train.phases=[{epochs: 1, trainable: all, lr: 0.003}]"], repo)
    assert "Running stage 'train'" in exp.stdout
    assert "Running stage 'ingest'" not in exp.stdout and "Running stage 'preprocess'" not in exp.stdout
    assert json.loads((repo / "models/train_summary.json").read_text())["backbone"] == "mobilenetv3small"
    shown = sh(["dvc", "exp", "show", "--json"], repo).stdout
    assert "mobilenetv3small" in shown
