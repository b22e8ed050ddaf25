"""`dvc repro` of the real dvc.yaml in a temporary git repository. The task switch and the experiment with another
backbone are in test_dvc_switch.py, on a repository of their own (so that another xdist worker runs them)."""

import json

import pytest

from benchmarks.processes import TINY, copy_repo, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = copy_repo(tmp_path_factory.mktemp("repo"), TINY)
    first = sh(["dvc", "repro"], path)
    return path, first


def test_repro_runs_every_stage_and_writes_outputs(repo):
    path, first = repo
    for stage in ("ingest", "validate", "split", "preprocess", "train", "evaluate", "gate", "register"):
        assert f"Running stage '{stage}'" in first.stdout
    metrics = json.loads((path / "reports/metrics.json").read_text())
    assert metrics["n"] > 0 and set(metrics["per_class"]) == {"COVID19", "NORMAL", "PNEUMONIA"}
    assert (path / "mlflow.db").is_file() and (path / "models/model.keras").is_file()
    gate = json.loads((path / "reports/gate.json").read_text())
    registration = json.loads((path / "reports/registration/registration.json").read_text())
    assert registration["registered"] == gate["passed"]  # registered exactly when the gate passed
    assert "Not a medical device" in (path / "reports/registration/model_card.md").read_text()
    summary = json.loads((path / "reports/validation/summary.json").read_text())
    assert summary["passed"] and summary["usable"] > 0
    assert json.loads((path / "reports/split/summary.json").read_text())["leakage"]["patient_id"] == 0
    assert (path / "dvc.lock").is_file()


def test_second_repro_does_nothing(repo):
    path, _ = repo
    second = sh(["dvc", "repro"], path)
    # only the registry check runs (always_changed); its output is unchanged, so the gate is not re-run
    assert [line for line in second.stdout.splitlines() if "Running stage" in line] == [
        "Running stage 'registry-state':"]
    assert "Stage 'gate' didn't change, skipping" in second.stdout


def test_editing_the_label_alias_table_makes_ingest_stale(repo):
    path, _ = repo
    labels = path / "components/core/data/labels.py"
    original = labels.read_text()
    labels.write_text(original + "\n# an edit to the alias table\n")
    try:
        status = sh(["dvc", "status", "ingest"], path).stdout
        assert "ingest:" in status and "modified:" in status and "components/core" in status
    finally:
        labels.write_text(original)


def stale_stages(path) -> set[str]:
    """The stages `dvc status` says must re-run, besides the always-changed registry check."""
    status = sh(["dvc", "status"], path).stdout
    return {line[:-1] for line in status.splitlines() if line.endswith(":") and not line.startswith((" ", "\t"))} - {
        "registry-state"}


def test_editing_the_model_card_makes_only_register_stale(repo):
    """Stage code deps are the modules each step imports (components/core/contract/codedeps.py): the model card
    is register's alone, so nothing upstream (train!) would re-run."""
    path, _ = repo
    card = path / "components/core/registry/modelcard.py"
    original = card.read_text()
    card.write_text(original + "\n# an edit to the model card\n")
    try:
        assert stale_stages(path) == {"register"}
    finally:
        card.write_text(original)
    assert stale_stages(path) == set()


def test_evaluation_param_change_does_not_retrain(repo):
    """DVC's plan for an evaluation param: evaluate (and register, whose card quotes the evaluate section) re-run;
    train and everything upstream stay (`dvc exp run` itself: the label review below, the backbone experiment in
    test_dvc_switch.py)."""
    path, _ = repo
    original = (path / "params.yaml").read_text()
    (path / "params.yaml").write_text(original.replace("top_losses: 4", "top_losses: 2"))
    try:
        assert stale_stages(path) == {"evaluate", "register"}
    finally:
        (path / "params.yaml").write_text(original)


@pytest.mark.parametrize("section,model", [("gate", "GateConfig"), ("preprocess", "PreprocessConfig"),
                                           ("train", "TrainConfig")])
def test_a_new_key_re_runs_only_the_stages_that_read_its_section(repo, section, model):
    """Params by section: a new key in one section's schema (components/core/contract/params/<section>.py) and in
    params.yaml makes stale exactly the stages whose specs read that section; a new gate key leaves every stage
    before the gate up to date."""
    from components import catalog

    path, _ = repo
    schema, params = path / f"components/core/contract/params/{section}.py", path / "params.yaml"
    originals = schema.read_text(), params.read_text()
    head = f"class {model}(Section):\n"
    assert head in originals[0] and f"\n{section}:\n" in originals[1]
    body = originals[0].index(head) + len(head)
    schema.write_text(originals[0][:body] + "    a_new_key: int = 3\n" + originals[0][body:])
    params.write_text(originals[1].replace(f"\n{section}:\n", f"\n{section}:\n  a_new_key: 4\n"))
    try:
        readers = {s.name for s in catalog.specs()  # the section's readers, and review-labels for the train schema
                   if s.dvc and f"components/core/contract/params/{section}.py" in catalog.stage_code(s)}
        assert stale_stages(path) == readers
    finally:
        schema.write_text(originals[0])
        params.write_text(originals[1])
    assert stale_stages(path) == set()
    assert {"gate": {"gate", "register"}, "preprocess": {"preprocess", "train", "external", "register"},
            "train": {"preprocess", "review-labels", "train", "external", "register"}}[section] == readers


def test_push_to_the_default_local_remote(repo):
    path, _ = repo
    sh(["dvc", "push"], path)
    assert any((path / "dvc-storage").rglob("*"))


def test_label_review_switched_on_produces_suspects_and_a_gallery(repo):
    """Off by default (the stage wrote empty reports); one switch runs it, and nothing else (not train)."""
    import pandas as pd

    path, _ = repo
    assert json.loads((path / "reports/label_review/summary.json").read_text())["enabled"] is False
    exp = sh(["dvc", "exp", "run", "-S", "review.enabled=true", "-S", "review.epochs=5", "-S", "review.image_size=32",
              "-S", "review.gallery=2"], path)
    assert "Running stage 'review-labels'" in exp.stdout and "Running stage 'train'" not in exp.stdout
    suspects = pd.read_csv(path / "reports/label_review/suspects.csv")
    assert list(suspects.columns[:5]) == ["path", "patient_id", "given_label", "suggested_label", "score"]
    raw = pd.read_csv(path / "data/raw/manifest.csv")
    assert len(suspects) >= 2 and set(suspects["path"]) <= set(raw["path"])  # paths as in data/raw/manifest.csv
    assert (path / "reports/label_review/gallery.html").read_text().count("data:image/png;base64,") == 6
    assert json.loads((path / "reports/label_review/summary.json").read_text())["enabled"] is True


def test_bad_params_fail_before_work_with_the_key(repo):
    path, _ = repo
    (path / "params.yaml").write_text((path / "params.yaml").read_text().replace("val_fraction", "val_fractoin"))
    proc = sh(["dvc", "repro", "split"], path, check=False)
    assert proc.returncode != 0
    assert "split.val_fractoin: unknown key" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
