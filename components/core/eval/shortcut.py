"""Shortcut stress tests: what the model (and the pixels it is fed) use besides the centre of the film.

The source-bias audit (:mod:`components.core.data.bias`) asks whether *file metadata* predicts the label.
These tests ask it of the *preprocessed images and the trained model*, on the internal test split and
on every external set:

1. ``centre_masked`` — the same images with the central field blanked (filled with the mean grey of the
   rest of the film). A model whose evidence lies in the centre of the film falls towards chance; one that
   still beats chance clearly reads the periphery: letterbox bands, borders, markers, text, shoulders, body
   outline. The field is a centred rectangle, not a lung mask (see below): the test cannot tell the lungs from
   the mediastinum or from tubes, lines and ECG leads lying over them.
2. ``border_probe`` — a logistic regression on the outer ``frame`` (12 %) of each side of the
   preprocessed square: strip means on a coarse grid, their spread, the share of black and of white
   pixels. Cross-validated by patient (``StratifiedGroupKFold``). It does not involve the model: it
   measures what the border (padding, text, markers, collimation) offers *any* model.
3. ``attention_outside`` — the share of the Grad-CAM mass of the true class that lies outside the
   central field, per class, against the share of the film's area outside it (what a uniform map gives).
   Read on the images the model classifies correctly, and only when it beats chance on the set: the
   maps of a model that has learned nothing say nothing.
4. ``source_probe`` — within each class whose images come from several sources (manifest column
   ``source``; an empty source is named after its set), pooled over the test split and the external
   sets: a logistic regression on the model's pooled features predicting the source, cross-validated
   by patient. It flags (blocks) only when those sources are **associated with the label in the training
   data** (chi-square test of sources x labels over training patients, p <= ``alpha`` and Cramér's V >= 0.1):
   only then can features that carry the source have served as a shortcut. Otherwise (one source in
   training, an external hospital the model never saw, sources with the same class mix) it is reported,
   not blocking: the features tell hospitals apart, which is a domain shift, not a learned shortcut.

**Central field.** ``evaluate.shortcut.central_field``: rows ``top``-``bottom`` and columns ``left``-``right``
(fractions; 10-90% and 5-95%, 72% of the area) of the part of the film the model sees: the film's box (from
the image's original width/height and the resize mode, :func:`components.core.data.square.content_box`, or from
the pixels, :func:`components.core.data.square.content_box_from_pixels`) clipped to the square. A letterboxed film
(``pad``) and a cropped one (``crop``) thus lose the same share of what the model sees (before, the field was
a share of the whole film box, and a cropped film's overflowed the square: 72% of a letterboxed film against
about 81% of a cropped square); the report gives the realised share of the film and of the square.

**Decision.** Balanced accuracy is compared with chance, ``1/K`` for the ``K`` classes (sources) present.
A test flags when its value is at least ``chance + margin`` *and* its one-sided p-value against chance
is at most ``alpha``. The p-value uses the binomial variance of each class's recall under a uniform
random predictor with the number of *patients* of the class as its sample size (a patient's images are
not independent evidence): small test sets cannot flag on noise. The attention test flags when a class
with at least ``min_per_class`` correctly classified images puts ``margin`` more of its heat outside the
central field than the area share, with a sign-flip p-value over the class's patients at most ``alpha`` (so
it needs at least 5 patients of a class to flag at 0.05). Requiring the margin too keeps the false-alarm
rate well below ``alpha``. Any flag sets ``shortcut_risk``; the gate blocks registration on it unless a
written acceptance is given.

Cost: every test runs on at most ``max_images`` images per set (a class-stratified subset), Grad-CAM in
batches; on the demo test split it adds a few seconds to evaluate (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.core.contract.params.evaluate import CentralFieldConfig, ShortcutConfig
from components.core.data.square import content_box, content_box_from_pixels

log = logging.getLogger(__name__)

TESTS = ("centre_masked", "border_probe", "attention_outside", "source_probe")
WHAT = {
    "centre_masked": "balanced accuracy with the central field blanked",
    "border_probe": "balanced accuracy of a classifier that reads only the outer frame",
    "attention_outside": "Grad-CAM share outside the central field minus its area share of the film",
    "source_probe": "balanced accuracy of predicting the source from the model's features, within a class",
}


@dataclass
class EvalSet:
    """One labelled set as evaluate holds it: pixels (N × S × S [× 1] uint8), labels, manifest rows and
    the resize mode the pixels were made with."""

    x: np.ndarray
    y: np.ndarray
    rows: pd.DataFrame
    resize: str


# --- statistics ------------------------------------------------------------------------------------

def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    present = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in present])) if len(present) else float("nan")


def p_above_chance(value: float, y: np.ndarray, groups: np.ndarray | None = None) -> float:
    """One-sided p-value of a balanced accuracy against chance (1/K): normal approximation of the mean of
    K recalls, each binomial with p = 1/K over the class's patients (its images when ``groups`` is None)."""
    present = np.unique(y)
    k = len(present)
    if k < 2:
        return 1.0
    q = 1.0 / k
    sizes = [len(np.unique(groups[y == c])) if groups is not None else int(np.sum(y == c)) for c in present]
    sd = math.sqrt(sum(q * (1 - q) / max(n, 1) for n in sizes)) / k
    return float(0.5 * math.erfc((value - q) / (sd * math.sqrt(2)))) if sd > 0 else float(value <= q)


def p_mean_positive(d: np.ndarray, draws: int = 4000, seed: int = 0) -> float:
    """One-sided p-value that the mean of ``d`` (one value per patient) is above 0: sign-flip test (exact
    up to 12 values; else ``draws`` random flips)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return 1.0
    if len(d) <= 12:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, len(d)))
    flipped = (signs * d).mean(axis=1)
    return float((np.sum(flipped >= d.mean() - 1e-12) + (len(d) > 12)) / (len(flipped) + (len(d) > 12)))


def _verdict(value: float | None, chance: float, margin: float, p: float | None, alpha: float) -> dict:
    threshold = chance + margin
    flagged = value is not None and value >= threshold and (p is None or p <= alpha)
    return {"value": _r(value), "chance": _r(chance), "threshold": _r(threshold), "margin": margin,
            "p_value": _r(p, 6), "flagged": bool(flagged)}


def _r(x, nd: int = 4):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def subsample(y: np.ndarray, max_images: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_images`` items, the same share of each class (sorted; all when fewer)."""
    n = len(y)
    if n <= max_images:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        take = max(1, round(max_images * len(idx) / n))
        keep.append(rng.permutation(idx)[:take])
    return np.sort(np.concatenate(keep))[: max(max_images, len(keep))]


# --- geometry --------------------------------------------------------------------------------------

def film_boxes(x: np.ndarray, rows: pd.DataFrame | None, mode: str) -> tuple[np.ndarray, str]:
    """Each film's box ``(top, left, height, width)`` in its square, and where it came from:
    ``manifest`` (original width/height + resize mode) or ``pixels``."""
    gray = x[..., 0] if x.ndim == 4 else x
    size = gray.shape[1]
    if rows is not None and {"width", "height"} <= set(rows.columns):
        w = pd.to_numeric(rows["width"], errors="coerce").fillna(0).to_numpy()
        h = pd.to_numeric(rows["height"], errors="coerce").fillna(0).to_numpy()
        if len(w) == len(gray) and (w > 0).all() and (h > 0).all():
            return np.array([content_box(int(a), int(b), size, mode) for a, b in zip(w, h, strict=True)]), "manifest"
    return np.array([content_box_from_pixels(g, mode) for g in gray]).reshape(-1, 4), "pixels"


def visible_box(box, size: int) -> tuple[int, int, int, int]:
    """The part of a film box ``(top, left, height, width)`` inside the square: ``(row0, row1, col0, col1)``."""
    top, left, bh, bw = (int(v) for v in box)
    return max(top, 0), min(top + bh, size), max(left, 0), min(left + bw, size)


def central_rect(box, size: int, field: CentralFieldConfig) -> tuple[int, int, int, int]:
    """The central field of one film box as square pixel bounds ``(row0, row1, col0, col1)`` (end-exclusive):
    the field's fractions of the visible film (the box clipped to the square)."""
    r0, r1, c0, c1 = visible_box(box, size)
    h, w = r1 - r0, c1 - c0
    return (r0 + round(field.top * h), r0 + round(field.bottom * h),
            c0 + round(field.left * w), c0 + round(field.right * w))


def central_masks(boxes: np.ndarray, size: int, field: CentralFieldConfig) -> np.ndarray:
    """Boolean N × S × S masks of the central field of each film."""
    masks = np.zeros((len(boxes), size, size), bool)
    for m, box in zip(masks, boxes, strict=True):
        r0, r1, c0, c1 = central_rect(box, size, field)
        m[r0:r1, c0:c1] = True
    return masks


def film_masks(boxes: np.ndarray, size: int) -> np.ndarray:
    """Boolean N × S × S masks of the visible film (its box clipped to the square)."""
    masks = np.zeros((len(boxes), size, size), bool)
    for m, box in zip(masks, boxes, strict=True):
        r0, r1, c0, c1 = visible_box(box, size)
        m[r0:r1, c0:c1] = True
    return masks


def blank_centre(x: np.ndarray, masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A copy of ``x`` with each central field filled with the mean grey of the rest of its film (inside its
    box, outside the field). Not the film's overall mean: that includes the centre, so an opacity there would
    leak into the fill."""
    out = x.copy()
    gray = out[..., 0] if out.ndim == 4 else out
    size = gray.shape[1]
    for g, m, (top, left, bh, bw) in zip(gray, masks, boxes, strict=True):
        film = np.zeros_like(m)
        film[max(top, 0):min(top + bh, size), max(left, 0):min(left + bw, size)] = True
        rest = g[film & ~m]
        if rest.size == 0:
            rest = g[~m]
        g[m] = np.uint8(round(float(rest.mean()))) if rest.size else 0
    return out


# --- probes ----------------------------------------------------------------------------------------

def border_features(x: np.ndarray, frame: float = 0.12, exclude: np.ndarray | None = None,
                    bins: int = 8) -> np.ndarray:
    """Features of the outer ``frame`` of each side of each square image (N × 76 for ``bins`` = 8).

    Per side (top, bottom, left, right; read from the edge inwards): the mean of an outer and an inner
    half-strip in ``bins`` cells along the side, the strip's standard deviation and its share of black
    (≤ 2) and white (≥ 253) pixels — enough to see letterbox bands, borders, corner markers and text.
    Pixels where ``exclude`` (N × S × S, the central field) is true are left out, so the film's centre never
    counts as border (a cell with nothing left reads -1).
    """
    gray = (x[..., 0] if x.ndim == 4 else x).astype(np.float32) / 255.0
    if exclude is not None:
        gray = np.where(exclude, np.nan, gray)
    s = gray.shape[1]
    w = max(2, round(frame * s))
    t = np.transpose(gray, (0, 2, 1))
    strips = (gray[:, :w, :], gray[:, ::-1, :][:, :w, :], t[:, :w, :], t[:, ::-1, :][:, :w, :])
    feats = []
    with warnings.catch_warnings():  # all-excluded cells: mean of nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        for st in strips:  # N × w (edge first) × S
            for half in np.array_split(st, 2, axis=1):
                feats += [np.nanmean(cell, axis=(1, 2)) for cell in np.array_split(half, bins, axis=2)]
            known = ~np.isnan(st)
            black, white = np.where(known, st <= 2 / 255, np.nan), np.where(known, st >= 253 / 255, np.nan)
            feats += [np.nanstd(st, axis=(1, 2)), np.nanmean(black, axis=(1, 2)), np.nanmean(white, axis=(1, 2))]
    return np.nan_to_num(np.stack(feats, axis=1), nan=-1.0)


def grouped_probe(features: np.ndarray, target: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> dict:
    """Cross-validated (by group) balanced accuracy of a standardised logistic regression, its chance
    level and p-value; ``{"not_run": reason}`` when there are too few groups per target value."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = np.asarray(target)
    values = np.unique(target)
    if len(values) < 2:
        return {"not_run": "one class only"}
    per_value = [len(np.unique(groups[target == v])) for v in values]
    k = min(folds, min(per_value))
    if k < 2:
        counts = dict(zip(values.tolist(), per_value, strict=True))
        return {"not_run": f"fewer than 2 patients in some class ({counts})"}
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000, class_weight="balanced"))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # tiny folds: sklearn warns about class counts and convergence
        warnings.simplefilter("ignore")
        pred = cross_val_predict(clf, features, target, groups=groups, cv=cv)
    value = balanced_accuracy(target, pred)
    return {"value": value, "chance": 1.0 / len(values), "p_value": p_above_chance(value, target, groups),
            "folds": k, "n": len(target), "groups": len(np.unique(groups))}


def attention_outside(heat: np.ndarray, masks: np.ndarray, y: np.ndarray, classes: list[str],
                      groups: np.ndarray | None = None, seed: int = 0, films: np.ndarray | None = None) -> dict:
    """Per class: the mean share of Grad-CAM mass outside the central field (maps with no mass are left out;
    with ``films``, only the mass on the visible film counts), the mean share of the film's area outside it,
    their difference (``excess``) and the one-sided p-value that the excess is above 0 (sign-flip test over
    patients: a patient's images are averaged first)."""
    films = np.ones_like(masks) if films is None else films
    heat = heat * films
    mass = heat.sum(axis=(1, 2))
    share = np.where(mass > 0, (heat * ~masks).sum(axis=(1, 2)) / np.where(mass > 0, mass, 1), np.nan)
    area = 1.0 - masks.sum(axis=(1, 2)) / np.maximum(films.sum(axis=(1, 2)), 1)
    groups = np.arange(len(y)).astype(str) if groups is None else np.asarray(groups).astype(str)
    out = {}
    for i, c in enumerate(classes):
        sel = (y == i) & np.isfinite(share)
        if not (y == i).any():
            continue
        s, a = (float(np.mean(share[sel])), float(np.mean(area[sel]))) if sel.any() else (np.nan, np.nan)
        per_patient = pd.Series(share[sel] - area[sel]).groupby(groups[sel]).mean().to_numpy()
        out[c] = {"n": int((y == i).sum()), "n_with_heat": int(sel.sum()), "patients": len(per_patient),
                  "share_outside": _r(s), "area_outside": _r(a), "excess": _r(s - a),
                  "p_value": _r(p_mean_positive(per_patient, seed=seed), 6)}
    return out


# --- the entry -------------------------------------------------------------------------------------

def _gradcam_batched(model, x: np.ndarray, class_index: np.ndarray, batch: int = 64) -> np.ndarray:
    from components.core.eval.gradcam import gradcam

    return np.concatenate([gradcam(model, x[i:i + batch], class_index[i:i + batch])
                           for i in range(0, len(x), batch)]) if len(x) else np.zeros((0, *x.shape[1:3]), np.float32)


def _one_set(model, s: EvalSet, classes: list[str], cfg: ShortcutConfig) -> tuple[dict, dict]:
    """The three per-set tests; also returns what the pooled source probe needs (features, labels…)."""
    from components.core.model import models

    idx = subsample(s.y, cfg.max_images, cfg.seed)
    x = s.x[idx] if s.x.ndim == 4 else s.x[idx][..., None]
    y = s.y[idx]
    rows = s.rows.iloc[idx].reset_index(drop=True)
    groups = rows["patient_id"].astype(str).to_numpy() if "patient_id" in rows else np.arange(len(y)).astype(str)
    size = x.shape[1]
    boxes, box_from = film_boxes(x, rows, s.resize)
    masks, films = central_masks(boxes, size, cfg.central_field), film_masks(boxes, size)
    m = cfg.margins
    out: dict = {"n": len(y), "of": len(s.y), "resize": s.resize, "film_box_from": box_from,
                 "blanked_share_of_film": _r(float(masks.sum() / max(films.sum(), 1))),
                 "blanked_share_of_square": _r(float(masks.mean()))}
    # 1. central field blanked
    proba = model.predict(x, batch_size=64, verbose=0)
    proba_masked = model.predict(blank_centre(x, masks, boxes), batch_size=64, verbose=0)
    k = len(np.unique(y))
    intact, masked = balanced_accuracy(y, proba.argmax(1)), balanced_accuracy(y, proba_masked.argmax(1))
    chance = 1.0 / k if k else float("nan")
    out["centre_masked"] = {**_verdict(masked, chance, m.centre_masked, p_above_chance(masked, y, groups),
                                       cfg.alpha),
                            "intact": _r(intact), "masked_accuracy": _r(float(np.mean(proba_masked.argmax(1) == y))),
                            "retained": _r((masked - chance) / (intact - chance)) if intact - chance > 0.05 else None}
    # 2. border-only probe
    probe = grouped_probe(border_features(x, cfg.frame, masks), y, groups, cfg.folds, cfg.seed)
    out["border_probe"] = ({"not_run": probe["not_run"]} if "not_run" in probe else
                           {**_verdict(probe["value"], probe["chance"], m.border_probe, probe["p_value"], cfg.alpha),
                            "folds": probe["folds"], "frame": cfg.frame})
    # 3. Grad-CAM outside the central field, on the images the model gets right (true = predicted class), and
    #    only from a model that beats chance: an untrained model's maps say nothing about what it uses
    right = proba.argmax(1) == y
    if p_above_chance(intact, y, groups) > cfg.alpha:
        out["attention_outside"] = {"not_run": f"the model does not beat chance on these images (balanced accuracy "
                                               f"{intact:.2f}): its attention says nothing"}
    else:
        heat = _gradcam_batched(model, x[right], y[right])
        per_class = attention_outside(heat, masks[right], y[right], classes, groups[right], cfg.seed, films[right])
        eligible = {c: v for c, v in per_class.items()
                    if v["n_with_heat"] >= cfg.min_per_class and v["excess"] is not None}
        if eligible:
            verdicts = {c: _verdict(v["excess"], 0.0, m.attention_outside, v["p_value"], cfg.alpha)
                        for c, v in eligible.items()}
            # the flagged class with the largest excess, else the largest excess
            worst = max(eligible, key=lambda c: (verdicts[c]["flagged"], eligible[c]["excess"]))
            out["attention_outside"] = {**verdicts[worst], "class": worst, "per_class": per_class}
        else:
            out["attention_outside"] = {"not_run": f"no class has {cfg.min_per_class} correctly classified images "
                                                   "with a non-zero map", "per_class": per_class}
    feats = models.pooled_features(model, x)
    pooled = {"features": np.asarray(feats, np.float32), "y": y, "groups": groups,
              "source": rows["source"].fillna("").astype(str).to_numpy() if "source" in rows else np.full(len(y), "")}
    return out, pooled


def training_association(train_rows: pd.DataFrame | None, sources: list[str],
                         alpha: float, min_v: float = 0.1) -> dict:
    """Are ``sources`` associated with the label in the training data? Chi-square test of independence on
    training *patients* (source x label), Cramér's V as the effect; ``associated`` when p <= ``alpha`` and
    V >= ``min_v``. Sources absent from training (another set, an external hospital) cannot be."""
    from scipy.stats import chi2_contingency

    if train_rows is None or "source" not in train_rows.columns:
        return {"known": False, "associated": True, "note": "no training rows with a source column: assumed"}
    df = train_rows.assign(source=train_rows["source"].fillna("").astype(str))
    df = df.drop_duplicates("patient_id") if "patient_id" in df.columns else df
    seen = sorted(set(df["source"]) & set(sources))
    out: dict = {"known": True, "sources_in_training": seen}
    if len(seen) < 2:
        out.update(associated=False, reason=f"{len(seen)} of these sources in the training data: the model cannot "
                   "have learned to tell them apart as a way to the label")
        return out
    table = pd.crosstab(df[df["source"].isin(seen)]["source"], df[df["source"].isin(seen)]["label"])
    table = table.loc[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        out.update(associated=False, reason="one label among the training patients of these sources")
        return out
    chi2, p, _, _ = chi2_contingency(table.to_numpy(), correction=False)
    v = float(np.sqrt(chi2 / (table.to_numpy().sum() * (min(table.shape) - 1))))
    out.update(chi2=_r(float(chi2)), p_value=_r(float(p), 6), cramers_v=_r(v), patients=int(table.to_numpy().sum()),
               associated=bool(p <= alpha and v >= min_v))
    out["reason"] = (f"source and label are associated among the training patients (Cramér's V {v:.2f}, p={p:.2g})"
                     if out["associated"] else f"no association of source and label among the training patients "
                     f"(Cramér's V {v:.2f}, p={p:.2g})")
    return out


def source_probe(pooled: dict[str, dict], classes: list[str], cfg: ShortcutConfig,
                 train_rows: pd.DataFrame | None = None) -> dict:
    """Within each class with several sources (pooled over the sets; an empty source is named after its
    set): can the model's features tell the sources apart? Flags only where those sources go with the label
    in the training data (:func:`training_association`); elsewhere ``above_chance`` reports it."""
    if not pooled:
        return {"not_run": "no sets"}
    feats = np.concatenate([p["features"] for p in pooled.values()])
    y = np.concatenate([p["y"] for p in pooled.values()])
    groups = np.concatenate([np.char.add(f"{name}:", p["groups"].astype(str)) for name, p in pooled.items()])
    source = np.concatenate([np.where(p["source"] == "", f"set:{name}", p["source"]) for name, p in pooled.items()])
    per_class, best = {}, None
    for i, c in enumerate(classes):
        sel = y == i
        if len(np.unique(source[sel])) < 2:
            continue
        probe = grouped_probe(feats[sel], source[sel], groups[sel], cfg.folds, cfg.seed)
        if "not_run" in probe:
            per_class[c] = {"not_run": probe["not_run"], "sources": sorted(set(source[sel]))}
            continue
        verdict = _verdict(probe["value"], probe["chance"], cfg.margins.source_probe, probe["p_value"], cfg.alpha)
        assoc = training_association(train_rows, sorted(set(source[sel])), cfg.alpha)
        per_class[c] = {**verdict, "above_chance": verdict["flagged"],
                        "flagged": verdict["flagged"] and assoc["associated"], "training_association": assoc,
                        "sources": sorted(set(source[sel])), "n": probe["n"]}
        if best is None or per_class[c]["value"] - per_class[c]["threshold"] > \
                per_class[best]["value"] - per_class[best]["threshold"]:
            best = c
    if best is None:
        reason = "no class has images from several sources" if not per_class else "too few patients per source"
        return {"not_run": reason, "per_class": per_class}
    return {**{k: per_class[best][k] for k in ("value", "chance", "threshold", "margin", "p_value")},
            "flagged": any(v.get("flagged") for v in per_class.values()),
            "above_chance": any(v.get("above_chance") for v in per_class.values()), "class": best,
            "per_class": per_class}


def stress_tests(model, sets: dict[str, EvalSet], classes: list[str], cfg: ShortcutConfig,
                 train_rows: pd.DataFrame | None = None) -> dict:
    """Run every test on every set (the internal test split first); the ``shortcut`` block of metrics.json.
    ``train_rows``: the training manifest (the source probe blocks only where source goes with the label there)."""
    if not cfg.enabled:
        block = {"enabled": False, "shortcut_risk": False, "flags": []}
        return {**block, "summary": summary_text(block)}
    t0 = time.perf_counter()
    block: dict = {"enabled": True, "central_field": cfg.central_field.model_dump(), "frame": cfg.frame,
                   "alpha": cfg.alpha, "max_images": cfg.max_images, "sets": {}}
    pooled = {}
    for name, s in sets.items():
        if len(s.y) == 0:
            continue
        block["sets"][name], pooled[name] = _one_set(model, s, classes, cfg)
    block["source_probe"] = source_probe(pooled, classes, cfg, train_rows)
    flags = []
    for name, res in block["sets"].items():
        for test in TESTS[:3]:
            r = res.get(test) or {}
            if r.get("flagged"):
                flags.append({"set": name, "test": test, "value": r["value"], "threshold": r["threshold"],
                              "chance": r["chance"], "p_value": r["p_value"], "class": r.get("class"),
                              "what": WHAT[test]})
    sp = block["source_probe"]
    for c, r in (sp.get("per_class") or {}).items():
        if r.get("flagged"):
            flags.append({"set": "pooled", "test": "source_probe", "value": r["value"], "threshold": r["threshold"],
                          "chance": r["chance"], "p_value": r["p_value"], "class": c, "what": WHAT["source_probe"]})
    block["flags"] = flags
    block["shortcut_risk"] = bool(flags)
    block["seconds"] = round(time.perf_counter() - t0, 2)
    block["summary"] = summary_text(block)
    log.info("shortcut tests (%.1f s): %s", block["seconds"], block["summary"])
    return block


# --- plain words -----------------------------------------------------------------------------------

def _set_label(name: str) -> str:
    return "the internal test split" if name == "test" else f"external set `{name}`"


def _reported_source_probe(block: dict) -> list[str]:
    """Source-probe results above chance that do not block (sources not associated with the label in training)."""
    out = []
    for c, r in ((block.get("source_probe") or {}).get("per_class") or {}).items():
        if r.get("above_chance") and not r.get("flagged"):
            out.append(f"Within class {c}, the model's features tell the sources {', '.join(r['sources'])} apart "
                       f"(balanced accuracy {r['value']:.2f}, chance {r['chance']:.2f}), but "
                       f"{r['training_association'].get('reason', 'they are not associated with the label')}: "
                       "reported, not blocking (a domain shift, not a learned shortcut).")
    return out


def summary_text(block: dict) -> str:
    """What the tests found, in plain words (the model card's paragraph)."""
    if not block.get("enabled"):
        return "The shortcut stress tests were turned off (evaluate.shortcut.enabled: false)."
    parts = []
    for f in block.get("flags", []):
        where = _set_label(f["set"]) if f["set"] != "pooled" else "the test split and external sets together"
        if f["test"] == "centre_masked":
            parts.append(f"On {where}, with the central field of the film blanked the model still reaches balanced "
                         f"accuracy {f['value']:.2f} (chance {f['chance']:.2f}): it uses something in the periphery "
                         "of the image (borders, markers, shoulders, body outline, letterbox).")
        elif f["test"] == "border_probe":
            parts.append(f"On {where}, a simple classifier that sees only the outer frame of the images (padding, "
                         f"borders, markers, text) reaches balanced accuracy {f['value']:.2f} (chance "
                         f"{f['chance']:.2f}): the borders alone give the class away, and a model can learn them.")
        elif f["test"] == "attention_outside":
            pc = block["sets"][f["set"]]["attention_outside"]["per_class"][f["class"]]
            parts.append(f"On {where}, {100 * pc['share_outside']:.0f}% of the Grad-CAM heat for {f['class']} lies "
                         f"outside the central field, which leaves only {100 * pc['area_outside']:.0f}% of the film "
                         "outside it: for that class the model looks at the periphery more than an even spread would.")
        elif f["test"] == "source_probe":
            parts.append(f"Within class {f['class']}, the model's features tell the image sources apart (balanced "
                         f"accuracy {f['value']:.2f}, chance {f['chance']:.2f}), and those sources go with the label "
                         "in the training data: the features carry the hospital, not only the disease.")
    reported = " ".join(_reported_source_probe(block))
    if not parts:
        figures = " ".join(_figures(name, res) for name, res in block.get("sets", {}).items())
        return ("Shortcut risk: none found. " + figures + (" " + reported if reported else "")
                + " These tests rule out the shortcuts they can see (borders, padding, markers, what lies in the "
                "periphery of the film), not every shortcut; the central field is a rectangle, not a lung mask, so "
                "they cannot tell the lungs from devices or the mediastinum lying over them.")
    if any(f["test"] != "border_probe" for f in block["flags"]):
        close = ("The accuracy above is probably inflated by these shortcuts and will not transfer to other "
                 "hospitals; do not register this model without a written acceptance of the risk.")
    else:  # only the data-level test: the model did not clearly use the borders here, but they are there
        lm = (block.get("sets", {}).get("test") or {}).get("centre_masked") or {}
        seen = (f" (with the central field blanked its balanced accuracy is {lm['value']:.2f}, flagged from "
                f"{lm['threshold']:.2f})") if lm.get("value") is not None else ""
        close = (f"The model itself did not clearly rely on them in these tests{seen}, but the shortcut is in the "
                 "data: accuracy on it is no evidence that the model works at other hospitals; do not register it "
                 "without a written acceptance of the risk.")
    return "Shortcut risk: YES. " + " ".join(parts) + (" " + reported if reported else "") + " " + close


def _figures(name: str, res: dict) -> str:
    bits = []
    lm, bp, at = res.get("centre_masked") or {}, res.get("border_probe") or {}, res.get("attention_outside") or {}
    if lm.get("value") is not None:
        bits.append(f"with the central {100 * (res.get('blanked_share_of_film') or 0):.0f}% of the film blanked the "
                    f"model's balanced accuracy is {lm['value']:.2f} (chance {lm['chance']:.2f}, flagged from "
                    f"{lm['threshold']:.2f})")
    if bp.get("value") is not None:
        bits.append(f"a classifier reading only the image borders reaches {bp['value']:.2f}")
    if at.get("value") is not None:
        pc = at["per_class"][at["class"]]
        bits.append(f"at most {100 * pc['share_outside']:.0f}% of a class's Grad-CAM heat ({at['class']}) lies "
                    f"outside the central field, which leaves {100 * pc['area_outside']:.0f}% of the film")
    return f"On {_set_label(name)}: " + "; ".join(bits) + "." if bits else ""
