"""Inference: `cxr predict` throughput (decode + batch predict) vs model.predict on in-memory arrays,
and `/predict` latency through the REST API (a real `cxr serve` on loopback, sequential requests).

    python -m benchmarks.inference --configs vgg16@224 mobilenetv3small@224 --images 200 --requests 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CLASSES, SAMPLE, machine, repeated_sample, table


def make_model(backbone: str, size: int, out: Path) -> Path:
    from components.core.contract.params.train import TrainConfig
    from components.core.model import models

    out.mkdir(parents=True, exist_ok=True)
    model = models.build_model(TrainConfig(backbone=backbone, weights="none", image_size=size), len(CLASSES))
    model.save(out / "model.keras")
    models.Preprocessing(tuple(CLASSES), "crop").save(out)
    return out


def latency(model_dir: Path, files: list[Path], requests_n: int, log: Path) -> tuple[float, float, float]:
    import requests

    from benchmarks.processes import free_port, start_cxr_serve, stop

    port = free_port()
    proc = start_cxr_serve(["--model", str(model_dir)], port, log)
    try:
        url = f"http://127.0.0.1:{port}/predict"
        payloads = [(f.name, f.read_bytes()) for f in files]
        requests.post(url, files={"file": payloads[0]}, timeout=120)  # warm-up
        times = []
        for i in range(requests_n):
            t = time.perf_counter()
            r = requests.post(url, files={"file": payloads[i % len(payloads)]}, timeout=120)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    finally:
        stop(proc)
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(np.max(ms))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["vgg16@224", "mobilenetv3small@224"])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args(argv)
    from components.core.data.images import decode_files
    from components.core.registry import registry
    from serving import predict

    rows, lat_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tree = repeated_sample(Path(tmp) / "tree", args.images)
        files = sorted(p for p in tree.rglob("*") if p.is_file())
        for cfg in args.configs:
            backbone, size = cfg.split("@")
            model_dir = make_model(backbone, int(size), Path(tmp) / cfg)
            bundle = registry.load(str(model_dir))
            x = np.stack([d for d in decode_files([str(f) for f in files[:64]], int(size), bundle.resize)
                          if not isinstance(d, str)])[..., None]
            bundle.model.predict(x, batch_size=64, verbose=0)  # warm-up (traces the predict function)
            t = time.perf_counter()
            bundle.model.predict(x, batch_size=64, verbose=0)
            bound = len(x) / (time.perf_counter() - t)
            t = time.perf_counter()
            summary = predict.run(bundle, tree, Path(tmp) / "preds.csv")
            ours = summary["images"] / (time.perf_counter() - t)
            rows.append([cfg, bound, ours, ours / bound])
            p50, p95, worst = latency(model_dir, sorted((SAMPLE / "PNEUMONIA").iterdir())[:10] +
                                      sorted((SAMPLE / "NORMAL").iterdir())[:10], args.requests,
                                      Path(tmp) / f"serve-{backbone}.log")
            lat_rows.append([cfg, args.requests, p50, p95, worst])
    print(f"inference on {args.images} files of ../shared/data/cxr-sample (untrained weights: speed only); "
          f"{machine()}")
    print(table(["config", "model.predict on arrays img/s", "cxr predict img/s (decode + predict + CSV)",
                 "ratio"], rows))
    print()
    print(table(["config", "requests", "p50 ms", "p95 ms", "max ms"], lat_rows))


if __name__ == "__main__":
    main()
