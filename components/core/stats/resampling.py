"""Patient bootstrap as counts: every resample at once, no per-resample Python loop.

A patient bootstrap draws whole patients with replacement; a patient drawn twice counts twice. Written as a
matrix of draw counts (resamples x patients), a resampled statistic that is a sum over patients (a confusion
matrix) becomes one matrix product. The gate reads the correlation of two models' macro F1 over these resamples
(for MOVER), and the operating-characteristic benchmark runs the gate thousands of times.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def patient_draws(patients: np.ndarray, resamples: int, seed: int, block: int = 250
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocks of at most ``block`` resamples: (draw counts, resamples x patients in sorted id order; each image's
    patient column). The same draws as :func:`components.core.stats.clinical.patient_resamples` with the same
    seed."""
    _, inverse = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    g = int(inverse.max()) + 1 if len(inverse) else 0
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        rows = min(block, resamples - done)
        drawn = rng.integers(0, g, (rows, g)) + g * np.arange(rows)[:, None]
        yield np.bincount(drawn.ravel(), minlength=rows * g).reshape(rows, g).astype(float), inverse
        done += rows


def patient_confusion(inverse: np.ndarray, y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Each patient's confusion counts (patients x k*k, true class major)."""
    cells = np.zeros((int(inverse.max()) + 1 if len(inverse) else 0, k * k))
    np.add.at(cells, (inverse, np.asarray(y) * k + np.asarray(pred)), 1.0)
    return cells


def macro_f1(counts: np.ndarray, cells: np.ndarray, k: int) -> np.ndarray:
    """Macro F1 of each resample (rows of patient draw ``counts``; ``cells``: :func:`patient_confusion`) over the
    classes present in it."""
    cm = (counts @ cells).reshape(-1, k, k)
    tp = np.einsum("rcc->rc", cm)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    present = support > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + predicted, 1e-300), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Correlation of two statistics over the resamples (finite pairs only); 0, the conservative value for
    MOVER, when either does not vary or fewer than 10 pairs are finite."""
    ok = np.isfinite(first) & np.isfinite(second)
    a, b = first[ok], second[ok]
    if len(a) < 10 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.clip(np.corrcoef(a, b)[0, 1], -1, 1))
