"""Orchestration overhead: `dvc repro` with nothing changed, after changing only a gate threshold,
and the per-task overhead of kfp.local (SubprocessRunner, use_venv=False) for a no-op task.

    python -m benchmarks.orchestration
"""


import argparse
import re
import tempfile
import time
from pathlib import Path

from benchmarks.common import table


def dvc_timings(work: Path) -> list[list]:
    from benchmarks.processes import TINY, copy_repo, sh

    repo = copy_repo(work / "repo", TINY)
    t = time.perf_counter()
    sh(["dvc", "repro"], repo)
    full = time.perf_counter() - t
    t = time.perf_counter()
    noop = sh(["dvc", "repro"], repo)
    noop_s = time.perf_counter() - t
    params = (repo / "params.yaml").read_text().replace("min_comparison_patients: 20", "min_comparison_patients: 21")
    (repo / "params.yaml").write_text(params)
    t = time.perf_counter()
    gate = sh(["dvc", "repro"], repo)
    gate_s = time.perf_counter() - t
    ran = re.findall(r"Running stage '(\w+)'", gate.stdout)
    assert "Running stage" not in noop.stdout
    return [["dvc repro, whole demo pipeline (tiny settings)", full, "all"],
            ["dvc repro, nothing changed", noop_s, "none"],
            ["dvc repro, gate.min_comparison_patients changed", gate_s, ", ".join(ran)]]


def kfp_overhead(work: Path, tasks: int) -> list[list]:
    from kfp import dsl, local

    @dsl.component
    def noop(x: int) -> int:
        return x + 1

    @dsl.pipeline
    def chain():
        out = noop(x=0)
        for _ in range(tasks - 1):
            out = noop(x=out.output)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "kfp"), raise_on_error=True)
    t = time.perf_counter()
    chain()
    total = time.perf_counter() - t
    return [[f"kfp.local, {tasks} no-op tasks in a chain", total, f"{total / tasks:.2f} s per task"]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--skip-dvc", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_dvc:
            rows += dvc_timings(Path(tmp))
        rows += kfp_overhead(Path(tmp), args.tasks)
    print(table(["what", "seconds", "stages run / note"], rows))


if __name__ == "__main__":
    main()
