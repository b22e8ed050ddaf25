"""Scaling of the data plane: synthetic data sets of N small images through ingest → validate → split →
preprocess → one training epoch, plus DVC on a data folder of that size.

Each stage runs in its own child process (a fresh interpreter that imports the code under ``--code``,
default this checkout), so its peak RSS is its own: ``resource.getrusage`` of the process itself and of
its pool workers (``RUSAGE_CHILDREN``: the largest worker). Per stage: wall seconds, images/s, CPU
seconds per 1,000 images (process + workers: stable on a busy box where wall time measures the
neighbours), peak RSS, files and bytes written. The DVC part times ``dvc add`` (hash + cache) of the
ingested folder in a temporary git repo, a no-op ``dvc status``, and ``dvc status`` + ``dvc commit``
after one image changed.

``--code DIR`` runs the stages of another checkout (e.g. ``git archive`` of the commit before the
fixes), so "before" and "after" come from the same script::

    python -m benchmarks.scale --sizes 10000 50000 100000
    git archive <rev> | tar -x -C /tmp/base && python -m benchmarks.scale --code /tmp/base --sizes 10000

The table ends with the growth from the smallest to the largest size: throughput ratio (1 = flat) and
peak-RSS ratio (goal ≤ 1.3).

``--proof`` instead trains the demo (``--proof-patients`` per class, 32 px, small_cnn) with one process and
with two worker processes on 127.0.0.1 (``train.workers: 2``, MultiWorkerMirroredStrategy, the same global
batch and seed) and prints both histories and the final validation metrics::

    python -m benchmarks.scale --proof --proof-epochs 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, table

STAGES = ("ingest", "validate", "split", "preprocess", "train")

# The child: run one step's run() under the code in sys.path[0], then report its own rusage.
CHILD = r"""
import json, os, resource, sys, time
args = json.loads(sys.argv[1])
import yaml
from components.core.contract.params.schema import parse_params
from components import catalog
params = parse_params(yaml.safe_load(open(args["params"])), args["params"])
mod = catalog.module(args["step"])
t0, c0 = time.perf_counter(), os.times()
summary = mod.run(params, **args["ports"])
wall = time.perf_counter() - t0
c1 = os.times()
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print("@@RESULT@@" + json.dumps({
    "wall": wall, "cpu": (c1.user - c0.user) + (c1.system - c0.system)
    + (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system),
    "rss_main_mb": me.ru_maxrss / 1024, "rss_worker_mb": kids.ru_maxrss / 1024}))
"""


def overrides(n: int, size: int) -> dict:
    """Params for ``n`` images: the demo at small sides, small_cnn at ``size`` px, one epoch."""
    return {
        "data.source": "demo",
        # 1–7 images per patient (4 on average), three classes (data.demo allows at most 10,000 patients per class)
        "data.demo": {"patients_per_class": max(2, round(n / 12)), "max_images_per_patient": 7, "min_side": 64,
                      "max_side": 96, "seed": 0},
        "train.backbone": "small_cnn", "train.weights": "none", "train.image_size": size, "train.batch_size": 64,
        "train.phases": [{"epochs": 1, "trainable": "all", "lr": 0.003}], "train.freeze_batchnorm": False,
        "evaluate.external": [],
        # params are checked whole: a small demo's validation split cannot keep params.yaml's 0.85 (never evaluated)
        "evaluate.target_sensitivity": {"COVID19": 0.5, "PNEUMONIA": 0.5},
    }


def write_params(code: Path, path: Path, n: int, size: int, extra: dict) -> None:
    import yaml

    sys.path.insert(0, str(code))
    try:
        from components.core.contract.params.schema import apply_overrides
    finally:
        sys.path.pop(0)
    raw = apply_overrides(yaml.safe_load((code / "params.yaml").read_text()), {**overrides(n, size), **extra})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def rows(csv: Path) -> int:
    with open(csv) as fh:
        return sum(1 for _ in fh) - 1


def tree_size(path: Path) -> tuple[int, int]:
    files = nbytes = 0
    if path.is_file():
        return 1, path.stat().st_size
    for root, _, names in os.walk(path):
        for name in names:
            files += 1
            nbytes += (Path(root) / name).stat().st_size
    return files, nbytes


def run_stage(code: Path, params: Path, step: str, ports: dict, log: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2", "CXR_PROGRESS_SECONDS": "60",
           "DVC_NO_ANALYTICS": "1"}
    arg = json.dumps({"params": str(params), "step": step, "ports": ports})
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, "-c", CHILD, arg], cwd=code, env=env, stdout=subprocess.PIPE,
                              stderr=fh, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@"))
    return json.loads(line.removeprefix("@@RESULT@@"))


def dvc_times(work: Path, raw: Path) -> dict:
    """``dvc add`` / ``dvc status`` / one changed image: ``dvc status`` + ``dvc commit``, in a temp git repo."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    repo = work / "dvcrepo"
    repo.mkdir()
    os.replace(raw, repo / "raw")

    def sh(*cmd: str) -> float:
        t = time.perf_counter()
        subprocess.run(list(cmd), cwd=repo, env=env, check=True, capture_output=True)
        return time.perf_counter() - t

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    out = {"add": sh("dvc", "add", "-q", "raw"), "status_noop": sh("dvc", "status")}
    victim = next(p for p in (repo / "raw").rglob("*.png"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    out["status_changed"] = sh("dvc", "status")
    out["commit"] = sh("dvc", "commit", "-f", "-q", "raw.dvc")
    os.replace(repo / "raw", raw)
    # by reference (images in object storage, docs/operations.md "Scaling out"): DVC tracks the manifest alone
    # (own repo)
    repo = work / "dvcref"
    (repo / "raw").mkdir(parents=True)
    shutil.copy(raw / "manifest.csv", repo / "raw" / "manifest.csv")
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    out["add_manifest_only"] = sh("dvc", "add", "-q", "raw")
    out["status_manifest_only"] = sh("dvc", "status")
    return out


def measure(code: Path, n: int, size: int, work: Path, extra: dict, dvc: bool) -> dict:
    params = work / "params.yaml"
    write_params(code, params, n, size, extra)
    d = {k: str(work / k) for k in ("raw", "validated", "splits", "shards", "models", "state", "rep_ingest",
                                    "rep_validation", "rep_split")}
    ports = {
        "ingest": {"out": d["raw"], "reports": d["rep_ingest"]},
        "validate": {"raw": d["raw"], "out": d["validated"], "reports": d["rep_validation"]},
        "split": {"manifest": d["validated"] + "/manifest.csv", "out": d["splits"], "reports": d["rep_split"]},
        "preprocess": {"splits": d["splits"], "images": d["raw"], "out": d["shards"]},
        "train": {"shards": d["shards"], "out": d["models"], "state": d["state"], "track": False},
    }
    written = {"ingest": ["raw", "rep_ingest"], "validate": ["validated", "rep_validation"],
               "split": ["splits", "rep_split"], "preprocess": ["shards"], "train": ["models"]}
    log = work / "stages.log"
    result: dict = {"n": n, "stages": {}}
    images = n
    for step in STAGES:
        r = run_stage(code, params, step, ports[step], log)
        if step == "ingest":
            images = rows(Path(d["raw"]) / "manifest.csv")
        count = rows(Path(d["shards"]) / "train.csv") if step == "train" else images  # train: one epoch
        files = nbytes = 0
        for key in written[step]:
            f, b = tree_size(Path(d[key]))
            files, nbytes = files + f, nbytes + b
        r.update({"images": count, "img_per_s": count / r["wall"], "cpu_ms_per_img": 1000 * r["cpu"] / count,
                  "files": files, "mb_written": nbytes / 2**20})
        if step == "train":  # the epoch alone (fit + validation), without TF start-up, calibration, OOD, saving
            with open(Path(d["models"]) / "history.csv") as fh:
                header, first = fh.readline().strip().split(","), fh.readline().strip().split(",")
            r["epoch_s"] = float(first[header.index("seconds")])
            r["epoch_img_per_s"] = count / r["epoch_s"]
        result["stages"][step] = r
        print(f"  {n}: {step} {r['wall']:.1f} s, {r['img_per_s']:.0f} img/s, RSS {r['rss_main_mb']:.0f}/"
              f"{r['rss_worker_mb']:.0f} MiB" + (f", epoch {r['epoch_img_per_s']:.0f} img/s" if "epoch_s" in r else ""),
              flush=True)
    result["images"] = images
    if dvc:
        result["dvc"] = dvc_times(work, Path(d["raw"]))
        print(f"  {n}: dvc {result['dvc']}", flush=True)
    return result


def proof(patients: int, epochs: int, work: Path) -> str:
    """One process vs two local workers on the same shards: per-epoch validation loss and the final numbers."""
    from components import ingest, preprocess, split, train
    from components.core.contract.params.schema import parse_params
    from components.core.data import shards as shard_io

    raw = {"data": {"demo": {"patients_per_class": patients, "max_images_per_patient": 3, "min_side": 64,
                             "max_side": 96}},
           "validate": {"workers": 1},
           "train": {"backbone": "small_cnn", "weights": "none", "image_size": 32, "batch_size": 32,
                     "phases": [{"epochs": epochs, "trainable": "all", "lr": 0.003}], "freeze_batchnorm": False,
                     "head": {"dense_units": 32, "dropout": 0.2}, "early_stopping": {"patience": epochs},
                     "calibrate": False,
                     # several workers skip the BatchNorm refresh: off for both, so that they train the same way
                     "refresh_batchnorm": 0}}
    p = parse_params(raw)
    ingest.run(p, work / "raw")
    split.run(p, work / "raw" / "manifest.csv", work / "splits", work / "rs")
    preprocess.run(p, work / "splits", work / "raw", work / "shards")
    runs = {}
    for workers in (1, 2):
        q = p.model_copy(update={"train": p.train.model_copy(update={"workers": workers})})
        t = time.perf_counter()
        summary = train.run(q, work / "shards", work / f"m{workers}", work / f"s{workers}", track=False)
        import pandas as pd

        hist = pd.read_csv(work / f"m{workers}" / "history.csv")
        from components.core.model import models

        model = models.load_model(work / f"m{workers}" / "model.keras")
        val = shard_io.load_split(work / "shards", "val")
        test = shard_io.load_split(work / "shards", "test")
        acc = {name: float((shard_io.predict(model, s.x).argmax(1) == s.y).mean()) for name, s in
               (("val", val), ("test", test))}
        runs[workers] = {"summary": summary, "hist": hist, "acc": acc, "seconds": time.perf_counter() - t}
    n_train = len(shard_io.load_split(work / "shards", "train").y)
    rows = [[int(e), round(float(a), 4), round(float(b), 4)] for e, a, b in
            zip(runs[1]["hist"]["epoch"], runs[1]["hist"]["val_loss"], runs[2]["hist"]["val_loss"], strict=False)]
    out = [f"demo: {n_train} training images, 32 px, small_cnn, global batch 32, {epochs} epochs",
           table(["epoch", "val_loss, 1 process", "val_loss, 2 workers"], rows)]
    final = [[f"{w} {'process' if w == 1 else 'workers'}", r["summary"]["best_epoch"],
              round(r["summary"]["best_value"], 4), round(r["acc"]["val"], 4), round(r["acc"]["test"], 4),
              round(r["seconds"], 1)] for w, r in runs.items()]
    out.append(table(["run", "best epoch", "best val_loss", "val accuracy", "test accuracy", "wall s"], final))
    d = {k: abs(runs[2][k2][k] - runs[1][k2][k]) for k, k2 in (("best_value", "summary"),)}
    out.append(f"|best val_loss 2 workers - 1 process| = {d['best_value']:.4f}; test accuracy "
               f"{runs[2]['acc']['test']:.3f} vs {runs[1]['acc']['test']:.3f} (n_test={len(test.y)})")
    return "\n\n".join(out)


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def report(results: list[dict]) -> str:
    rows = []
    for res in results:
        for step, r in res["stages"].items():
            rows.append([res["images"], step, round(r["wall"], 1), round(r["img_per_s"]), round(r["cpu_ms_per_img"], 2),
                         round(max(r["rss_main_mb"], r["rss_worker_mb"])), round(r["rss_main_mb"]),
                         round(r["rss_worker_mb"]), r["files"], round(r["mb_written"], 1)])
    out = [table(["images", "stage", "wall s", "img/s", "CPU ms/img", "peak RSS MiB", "main MiB", "worker MiB",
                  "files", "MB written"], rows)]
    keys = ("add", "status_noop", "status_changed", "commit", "add_manifest_only", "status_manifest_only")
    dvc_rows = [[res["images"], *(round(res["dvc"][k], 2) if k in res["dvc"] else "" for k in keys)]
                for res in results if "dvc" in res]
    if dvc_rows:
        out.append(table(["images", "dvc add s", "dvc status s (no change)", "dvc status s (1 changed)",
                          "dvc commit s", "dvc add s, manifest only", "dvc status s, manifest only"], dvc_rows))
    epochs = [[res["images"], t["images"], round(t["epoch_s"], 1), round(t["epoch_img_per_s"])]
              for res in results if "epoch_s" in (t := res["stages"]["train"])]
    if epochs:
        out.append(table(["images", "training images", "epoch s (fit + validation)", "epoch img/s"], epochs))
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = []
        for step in STAGES:
            ra, rb = a["stages"][step], b["stages"][step]
            growth.append([step, round(rb["img_per_s"] / ra["img_per_s"], 2),
                           round(ra["cpu_ms_per_img"] and rb["cpu_ms_per_img"] / ra["cpu_ms_per_img"], 2),
                           round(max(rb["rss_main_mb"], rb["rss_worker_mb"])
                                 / max(ra["rss_main_mb"], ra["rss_worker_mb"]), 2)])
        out.append(f"growth {a['images']} → {b['images']} images (x{b['images'] / a['images']:.1f}):\n"
                   + table(["stage", "throughput ratio (1 = flat)", "CPU per image ratio", "peak RSS ratio"], growth))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose components run (default: this one)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="more params overrides")
    ap.add_argument("--no-dvc", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    ap.add_argument("--proof", action="store_true", help="1 process vs 2 local workers on the demo (see above)")
    ap.add_argument("--proof-patients", type=int, default=40)
    ap.add_argument("--proof-epochs", type=int, default=8)
    args = ap.parse_args(argv)
    if args.proof:
        with tempfile.TemporaryDirectory(prefix="scale-proof-") as d:
            print(f"load average at start: {load_avg()}")
            print(proof(args.proof_patients, args.proof_epochs, Path(d)))
            print(f"load average at end: {load_avg()}")
        return
    import yaml

    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(f"code: {args.code}; load average at start: {load_avg()}; {os.cpu_count()} cores", flush=True)
    results = []
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=args.keep))
        try:
            res = measure(args.code.resolve(), n, args.image_size, work, extra, not args.no_dvc)
            res["load_after"] = load_avg()
            results.append(res)
            if args.json:  # after every size: a long run that is stopped keeps what it measured
                args.json.write_text(json.dumps(results, indent=1))
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {load_avg()}")
    print(report(results))


if __name__ == "__main__":
    main()
