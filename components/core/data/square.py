"""Fitting a film to the model's square: ``pad`` (letterbox), ``pad_edge`` (letterbox filled with the film's edge)
or ``crop`` (centre square), and where the film lies in the result.

Every function takes the mode explicitly: the project's default is ``preprocess.resize`` (``crop``, chosen by the
shortcut tests: docs/architecture.md "The default resize"), and a model is served with the mode it was trained
with (its preprocessing record). The modes live here, with the code that applies them (:data:`MODES`); the
``preprocess`` section's schema names the same three for params.yaml (a test checks they agree).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


# how a film is fitted to the model's square: pad (letterbox, black bands), pad_edge (letterbox, bands filled with the
# film's edge), crop (centre square; the default, docs/architecture.md "The default resize")
MODES: tuple[str, ...] = ("pad", "pad_edge", "crop")


def content_box(width: int, height: int, size: int, mode: str) -> tuple[int, int, int, int]:
    """Where the film lies in the ``size``×``size`` square that :func:`fit_square` makes of a
    ``width``×``height`` image: ``(top, left, box_height, box_width)`` in square pixels.

    With ``pad``/``pad_edge`` the box is inside the square (letterboxed); with ``crop`` it is larger
    than the square (negative top/left: the film's cut-off parts lie outside). Regions defined
    relative to the film (the central field of the shortcut tests) map through this box.
    """
    if mode not in MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {MODES}")
    scale = (size / max(height, width)) if mode != "crop" else (size / min(height, width))
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    if mode == "crop":
        return -((nh - size) // 2), -((nw - size) // 2), nh, nw
    return (size - nh) // 2, (size - nw) // 2, nh, nw


def content_box_from_pixels(img: np.ndarray, mode: str) -> tuple[int, int, int, int]:
    """The film's box in a square made by :func:`fit_square` when the original size is unknown.

    ``pad``: the leading/trailing rows and columns that are all zero (a film whose own edge rows are
    pure black loses them from the box too). ``pad_edge``: the leading/trailing rows (columns) that
    repeat their inner neighbour. ``crop``: the whole square (the cut-off parts cannot be recovered).
    """
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[..., 0]
    size_h, size_w = img.shape
    if mode == "crop":
        return 0, 0, size_h, size_w

    def span(a: np.ndarray) -> tuple[int, int]:  # first and last index of the film along axis 0
        n = len(a)
        if mode == "pad":
            nonzero = np.flatnonzero(a.any(axis=1))
            return (int(nonzero[0]), int(nonzero[-1])) if nonzero.size else (0, n - 1)
        same = np.all(a[1:] == a[:-1], axis=1)  # same[i]: row i+1 repeats row i
        lo = 0
        while lo < n - 1 and same[lo]:
            lo += 1
        hi = n - 1
        while hi > lo and same[hi - 1]:
            hi -= 1
        return lo, hi

    top, bottom = span(img)
    left, right = span(img.T)
    return top, left, bottom - top + 1, right - left + 1


def fit_square(gray: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Aspect-preserving resize to ``size``×``size``.

    - ``pad``: letterbox: the whole film, black bands on the short side;
    - ``pad_edge``: the whole film, the bands filled by repeating the film's edge rows (columns)
      outward, so their height (the image's aspect ratio, which in mixed-source data follows the
      hospital and so the class) is not drawn as a sharp black rectangle;
    - ``crop``: centre square of the film (torchxrayvision's ``XRayCenterCrop``), no bands, the
      ends of the long side cut off.

    See BENCHMARKS.md ("Resize modes and shortcuts") for what each costs and buys.
    """
    if mode not in MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {MODES}")
    h, w = gray.shape
    top, left, nh, nw = content_box(w, h, size, mode)
    im = Image.fromarray(gray).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if mode == "crop":
        return np.asarray(im.crop((-left, -top, -left + size, -top + size)), dtype=np.uint8)
    film = np.asarray(im, dtype=np.uint8)
    pad = ((top, size - nh - top), (left, size - nw - left))
    return np.pad(film, pad, mode="constant" if mode == "pad" else "edge")
