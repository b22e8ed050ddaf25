"""Pixel decisions of components/core/data/images.py, measured on the real sample:

(1) JPEG draft mode (PIL decodes at 1/2-1/8 scale in the DCT domain) vs full decode, each followed by
    the same resize (``fit_square``, pad): grey-level differences at the model's input size and the CPU
    time saved (process CPU time: stable on a shared machine). Pixels that depend on the container give a
    model a format signature, hence full decode.
(2) min-max stretch vs the robust window (``images.robust_window``, what every 16-bit image gets) on real
    films stored as 12-bit data in 16-bit PNGs, clean, with a burned-in marker at 65535, or with a
    padding strip at 65535. Reference: the min-max stretch of the clean 12-bit film (its own contrast).

    python -m benchmarks.pixels --files 24 --sizes 32 64 224
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import SAMPLE, table


def _draft_decode(data: bytes, size: int) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.draft("L", (size * 2, size * 2))  # the largest 1/2^k scale that stays >= 2x the target
    im.load()
    return np.asarray(im.convert("L"))


def _full_decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im.convert("L"))


def draft_vs_full(files: list[Path], sizes: list[int]) -> list[list]:
    from components.core.data.square import fit_square

    datas = [f.read_bytes() for f in files]
    rows = []
    for size in sizes:
        diffs, worst, t_draft, t_full = [], 0, 0.0, 0.0
        for data in datas:
            t = time.process_time()
            a = fit_square(_draft_decode(data, size), size, "pad")  # the film whole: every decoded pixel compared
            t_draft += time.process_time() - t
            t = time.process_time()
            b = fit_square(_full_decode(data), size, "pad")
            t_full += time.process_time() - t
            d = np.abs(a.astype(int) - b.astype(int))
            diffs.append(d.mean())
            worst = max(worst, int(d.max()))
        n = len(datas)
        rows.append([size, float(np.mean(diffs)), float(np.max(diffs)), worst, 1000 * t_draft / n, 1000 * t_full / n,
                     1000 * (t_full - t_draft) / n])
    return rows


def with_marker(arr: np.ndarray, kind: str, value: int = 65535) -> np.ndarray:
    """A burned-in marker (a letter-sized block, top left) or a padding strip (right edge) at ``value``."""
    out = arr.copy()
    h, w = out.shape
    if kind == "marker":
        out[8:8 + h // 12, 8:8 + w // 12] = value
    elif kind == "strip":
        out[:, w - w // 10:] = value
    return out


def minmax(arr: np.ndarray) -> np.ndarray:
    a = arr.astype(float)
    return np.rint((a - a.min()) * 255 / (a.max() - a.min())).astype(np.uint8)


def window_vs_minmax(files: list[Path], side: int = 512) -> list[list]:
    from components.core.data import images

    rows = []
    for kind in ("clean", "marker", "strip"):
        stats: dict[str, list[tuple[float, float, int]]] = {"min-max": [], "robust window": []}
        for f in files:
            film = np.asarray(Image.open(f).convert("L").resize((side, side)), dtype=np.uint16)
            deep = film * 16 + 200  # 12-bit-like values 200..4280
            ref = minmax(deep)
            arr = with_marker(deep, kind)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")  # uint16 → a 16-bit grayscale PNG
            body = np.ones(arr.shape, bool) if kind == "clean" else arr != 65535  # compare where the film is
            for name, out in (("min-max", minmax(arr)), ("robust window", images.decode_gray(buf.getvalue()))):
                err = float(np.abs(out.astype(int) - ref.astype(int))[body].mean())
                contrast = float(out[body].std() / max(1e-9, ref[body].std()))
                stats[name].append((err, contrast, len(np.unique(out[body]))))
        for name, values in stats.items():
            v = np.array(values, dtype=float)
            rows.append([kind, name, float(v[:, 0].mean()), float(v[:, 1].mean()), int(v[:, 2].mean())])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=24, help="JPEGs for (1) and films for (2) from the sample")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224])
    args = ap.parse_args(argv)
    every = sorted(SAMPLE.rglob("*.jpeg"))
    jpegs = every[:: max(1, len(every) // max(1, args.files))][: args.files]  # spread over the classes' sources
    if not jpegs:
        raise SystemExit(f"no JPEGs under {SAMPLE}: the benchmarks read ../shared/data/cxr-sample")
    sides = sorted(max(Image.open(f).size) for f in jpegs)
    print(f"(1) JPEG draft mode vs full decode, each + fit_square(pad): {len(jpegs)} real JPEGs from every class "
          f"(long side {sides[0]}-{sides[-1]} px)")
    print(table(["size px", "mean abs diff (grey levels)", "worst image mean", "max pixel diff",
                 "draft CPU ms/img", "full CPU ms/img", "saved CPU ms/img"], draft_vs_full(jpegs, args.sizes)))
    films = sorted((SAMPLE / "NORMAL").glob("*.jpeg"))[: max(1, args.files // 3)]
    print(f"\n(2) 16-bit film (12-bit data, {len(films)} real films at 512 px) → 8 bits: min-max vs robust window; "
          "error and contrast against the clean film's own stretch, where the film is (marker/strip pixels excluded)")
    print(table(["film", "rule", "mean abs error (grey levels)", "contrast kept (std ratio)", "distinct levels"],
                window_vs_minmax(films)))


if __name__ == "__main__":
    main()
