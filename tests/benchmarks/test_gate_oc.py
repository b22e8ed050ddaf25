"""benchmarks/gate_oc.py at a tiny size (a few simulated pairs), so it does not rot; the measured table is in
BENCHMARKS.md."""

from benchmarks import gate_oc


def test_gate_oc_smoke(tmp_path, capsys):
    out = gate_oc.main(["--sims", "4", "--ns", "24", "--diffs", "-0.1", "0", "--png", str(tmp_path / "oc.png")])
    text = capsys.readouterr().out
    assert "| true difference (points) | test patients | pairs | P(pass) | P(inconclusive) | P(fail) |" in text
    # (stripped line by line: under xdist another test's thread may leave blanks on the shared stdout)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines[-1].startswith("gate-oc: max P(pass | worse by >= margin) = ")
    assert "max P(fail | equal) = " in out["line"] and (tmp_path / "oc.png").stat().st_size > 1000
    assert set(out["results"]) == {(24, -0.1), (24, 0.0)}
    assert all(abs(sum(r[k] for k in ("passed", "inconclusive", "failed")) - 1) < 1e-9 for r in out["results"].values())
