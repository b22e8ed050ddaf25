"""benchmarks/loop.py at tiny sizes, so it does not rot (no assertions on the measured numbers)."""

import pytest

from benchmarks import loop

pytestmark = pytest.mark.slow


def test_loop_benchmark_smoke(capsys):
    out = loop.main(["--quick", "--scenarios", "demo", "--pool", "30", "--windows", "3", "--window", "20"])
    assert "OOD AUROC vs internal test" in capsys.readouterr().out
    assert set(out["scenarios"]["demo"]["external"]) == {"demo-site-b", "demo-shifted"}
    assert out["monitoring"]["window_false_alarm"]["windows"] == 3
