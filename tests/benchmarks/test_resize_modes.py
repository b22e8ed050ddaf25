"""benchmarks/resize_modes.py at tiny sizes, so it does not rot (no timing assertions)."""

import pytest

from benchmarks import resize_modes

pytestmark = pytest.mark.slow


def test_resize_modes_smoke(shared_sample, capsys):
    resize_modes.main(["--modes", "pad", "crop", "--seeds", "1", "--epochs", "1", "--size", "32"])
    out = capsys.readouterr().out
    assert "| pad |" in out and "| crop |" in out and "ratio vs pad" in out and "centre-masked" in out


def test_evaluate_cost_smoke(tmp_path, capsys):
    import yaml

    from tests.support import TRAIN_TINY, tiny_params, write_params

    params = write_params(tmp_path / "params.yaml", tiny_params(train={**TRAIN_TINY, "phases": [
        {"epochs": 1, "trainable": "all", "lr": 0.003}]}, evaluate={"bootstrap": {"resamples": 0}}))
    assert yaml.safe_load(params.read_text())["evaluate"]["shortcut"]["enabled"]
    resize_modes.main(["--cost", "--repeats", "1", "--size", "32", "--params", str(params)])
    out = capsys.readouterr().out
    assert "shortcut tests on" in out and "ratio vs off" in out
