"""Validation throughput: manifest facts (header, sha256, full decode of every file, whatever its
format) + the Great Expectations suite, on the real sample repeated to N files, with 1 and 2 worker
processes. Besides wall-clock rates, the CPU time the facts cost (this process and its finished workers)
is printed per image: on a shared machine, where other jobs steal cores, it is the stable number.

    python -m benchmarks.validation --files 2000
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.common import CLASSES, repeated_sample, table


def cpu_seconds() -> float:
    """CPU time of this process and of its terminated, waited-for children (the pool's workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    from components import ingest, validate
    from components.core.contract.params.schema import parse_params
    from components.core.data import manifest, validation

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = repeated_sample(Path(tmp) / "tree", args.files)
        base = {"data": {"source": "dir", "path": str(tree), "classes": CLASSES},
                "validate": {"bias_audit": {"enabled": False}}}
        ingest.run(parse_params(base), Path(tmp) / "raw")
        raw = manifest.read(Path(tmp) / "raw" / "manifest.csv")
        baseline = None
        for w in args.workers:
            load = os.getloadavg()[0]
            t, c = time.perf_counter(), cpu_seconds()
            validation.build_facts(Path(tmp) / "raw", raw, 40_000_000, w)
            facts_s, facts_cpu = time.perf_counter() - t, cpu_seconds() - c
            p = parse_params({**base, "validate": {**base["validate"], "workers": w,
                                                   "critical": ["label_in_classes"]}})
            t = time.perf_counter()
            validate.run(p, Path(tmp) / "raw", Path(tmp) / f"v{w}", Path(tmp) / f"r{w}")
            total_s = time.perf_counter() - t
            baseline = baseline or args.files / facts_s
            rows.append([w, args.files / facts_s, args.files / facts_s / baseline, 1000 * facts_cpu / args.files,
                         args.files / total_s, total_s - facts_s, round(load, 1)])
    print(f"validation of {args.files} files (../shared/data/cxr-sample repeated; every file fully decoded)")
    print(table(["workers", "facts img/s", "ratio vs 1 worker", "facts CPU ms/img",
                 "whole step img/s (facts + GX + docs)", "GX + docs + I/O s", "load avg at start"], rows))


if __name__ == "__main__":
    main()
