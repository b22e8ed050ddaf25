"""What the image decoder and the DICOM reader share: the refusal type and the windowing of deep pixels
(``images`` decodes every format and dispatches DICOM to ``dicom``; both use these, neither imports the other's
internals)."""

from __future__ import annotations

import numpy as np

from components.core.contract.errors import DataError

# the window of high-bit-depth pixels: these percentiles of the values strictly between min and max
WINDOW_PERCENTILES = (0.5, 99.5)


class ImageError(DataError):
    """An image that cannot be used; ``reason`` is a short machine-readable code, ``detail`` keeps the
    numbers, ``limit`` names the param that refused it (``validate.max_pixels``; '' when none) and
    ``facts`` holds what the header told before the failure (width, height, format…)."""

    def __init__(self, reason: str, detail: str, limit: str = "", facts: dict | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.limit = limit
        self.facts = dict(facts or {})


def check_finite(values: np.ndarray) -> None:
    """Refuse float pixels that hold NaN or infinity (``non_finite_pixels``): windowing would draw them black."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fc":
        return
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ImageError("non_finite_pixels", f"{bad} of {arr.size} pixels ({bad / arr.size:.1%}) are NaN or "
                                              "infinite (a float image with missing data)")


def robust_window(values: np.ndarray) -> tuple[np.ndarray, str]:
    """High-bit-depth values → uint8 through the :data:`WINDOW_PERCENTILES` of the pixels strictly
    between the minimum and the maximum (see the module docstring); returns (pixels, rule). NaN or infinite
    values are refused (:func:`check_finite`)."""
    arr = np.asarray(values)
    check_finite(arr)
    data = arr.astype(np.float64) if arr.dtype.kind not in "fiu" else arr
    finite = data.ravel()
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8), "none"
    step = max(1, finite.size // 4_000_000)  # percentiles of a regular subsample on very large images
    sample = finite.ravel()[::step]
    lo_all, hi_all = float(finite.min()), float(finite.max())
    inner = sample[(sample > lo_all) & (sample < hi_all)]
    rule = "minmax"
    lo, hi = lo_all, hi_all
    if inner.size >= max(2, 0.01 * sample.size):
        p_lo, p_hi = (float(v) for v in np.percentile(inner, WINDOW_PERCENTILES))
        if p_hi > p_lo:
            lo, hi, rule = p_lo, p_hi, f"percentile_{WINDOW_PERCENTILES[0]:g}_{WINDOW_PERCENTILES[1]:g}"
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8), "constant"
    scaled = (data.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), rule
