"""Load on the REST API: a bounded loopback load against a real `cxr serve` (asyncio + httpx),
fixed request count and concurrency. Reports requests/s, p50/p95/p99 latency, the error rate, and
the server's resident memory over the run (a leak shows as steady growth).

    python -m benchmarks.load --requests 1200 --concurrency 8 --backbone mobilenetv3small --size 224
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SAMPLE, table


async def hammer(url: str, payloads: list[tuple[str, bytes]], n: int, concurrency: int, on_progress) -> tuple:
    import httpx

    latencies: list[float] = []
    statuses: list[int] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    async with httpx.AsyncClient(timeout=120) as client:
        async def worker():
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                name, data = payloads[i % len(payloads)]
                t = time.perf_counter()
                try:
                    r = await client.post(url, files={"file": (name, data)})
                    statuses.append(r.status_code)
                except httpx.HTTPError:
                    statuses.append(0)
                latencies.append(time.perf_counter() - t)
                on_progress(len(statuses))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies, statuses


def run(requests_n: int, concurrency: int, backbone: str, size: int, workdir: Path) -> dict:
    import psutil

    from benchmarks.inference import make_model
    from benchmarks.processes import free_port, start_cxr_serve, stop

    model_dir = make_model(backbone, size, workdir / "model")
    port = free_port()
    proc = start_cxr_serve(["--model", str(model_dir)], port, workdir / "serve.log")
    server = psutil.Process(proc.pid)
    rss: list[tuple[int, float]] = []
    files = sorted((SAMPLE / "PNEUMONIA").iterdir())[:10] + sorted((SAMPLE / "COVID19").iterdir())[:10]
    payloads = [(f.name, f.read_bytes()) for f in files]
    step = max(1, requests_n // 20)

    def sample(done: int) -> None:
        if done % step == 0:
            rss.append((done, server.memory_info().rss / 2**20))

    try:
        asyncio.run(hammer(f"http://127.0.0.1:{port}/predict", payloads, min(50, requests_n), concurrency,
                           lambda d: None))  # warm-up
        rss.append((0, server.memory_info().rss / 2**20))
        elapsed, lat, statuses = asyncio.run(hammer(f"http://127.0.0.1:{port}/predict", payloads, requests_n,
                                                    concurrency, sample))
    finally:
        stop(proc)
    ms = np.array(lat) * 1000
    first_half = [m for d, m in rss if d <= requests_n // 2]
    second_half = [m for d, m in rss if d > requests_n // 2]
    return {"requests": requests_n, "concurrency": concurrency, "rps": requests_n / elapsed,
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "errors": sum(s != 200 for s in statuses),
            "rss_start": rss[0][1], "rss_end": rss[-1][1], "rss_max": max(m for _, m in rss),
            "rss_growth_second_half": (max(second_half) - max(first_half)) if second_half and first_half else 0.0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--backbone", default="mobilenetv3small")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.requests, args.concurrency, args.backbone, args.size, Path(tmp))
    print(f"load on POST /predict, {args.backbone}@{args.size}, real X-rays from ../shared/data/cxr-sample")
    print(table(["requests", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "RSS start MiB",
                 "RSS end MiB", "RSS growth, 2nd half MiB"],
                [[r["requests"], r["concurrency"], r["rps"], r["p50"], r["p95"], r["p99"], r["errors"],
                  r["rss_start"], r["rss_end"], r["rss_growth_second_half"]]]))


if __name__ == "__main__":
    main()
