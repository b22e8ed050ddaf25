"""Review labels: which training labels look wrong.

**Explicit means on.** ``cxr review-labels`` typed by hand runs the review whatever ``review.enabled`` says;
``review.enabled`` (off by default) decides only whether ``dvc repro`` and the KFP pipeline run it: their command
carries ``--if-enabled`` (:attr:`Option.pipeline <components.core.contract.spec.Option>`), and with the flag off
they write the same files empty (and say so) in no time.

Out-of-fold probabilities over the training and validation splits (``review.folds`` patient-grouped folds, a
short training per fold), then confident learning (cleanlab's ``find_label_issues``) ranked by
self-confidence: :mod:`components.core.eval.label_review`. Outputs, in ``reports/label_review/``:

* ``suspects.csv``: ``path,patient_id,given_label,suggested_label,score`` (``path`` as in
  ``data/raw/manifest.csv``; ``score`` = the out-of-fold probability of the given label, lowest first), then
  ``sha256,rank,split,fold,p_suggested``;
* ``pred_probs.csv``: every reviewed image's out-of-fold probabilities (what cleanlab read);
* ``gallery.html``: the top ``review.gallery`` suspects with Grad-CAM for the suggested and the given class;
* ``cams.npz``: every suspect's Grad-CAM maps (held-out fold's model; suggested and given class), for the
  review page;
* ``summary.json``: counts, the fold models' agreement with the given labels, the seconds it took.

``cxr review-labels serve`` (``serving/review_app.py``) is the page where a person decides, one patient at a
time, and each decision is a confirmed line of ``data/label_overrides.csv`` at once.

``cxr review-labels --accept N`` runs no review: it appends the top N suspects of the last review that have no
line yet to ``--label-overrides`` (``data/label_overrides.csv``) as *proposed* relabels. Nothing changes until a
person confirms a line (:mod:`components.core.data.overrides`); ingest then applies it and ``dvc repro`` retrains.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="review-labels",
    help="find training labels that look wrong: out-of-fold probabilities + confident learning. Typed by hand it "
         "always runs; review.enabled decides only whether dvc repro and the KFP pipeline run it (they pass "
         "--if-enabled). `cxr review-labels serve`: the page where a person decides",
    params=("data.classes", "review"),
    inputs=(Port("shards", "data/shards", "preprocessed shards (the train and val splits are reviewed)"),),
    outputs=(Port("out", "reports/label_review", "suspects.csv, pred_probs.csv, gallery.html, cams.npz, summary.json",
                  dvc=(("suspects.csv", "out"), ("pred_probs.csv", "out"), ("gallery.html", "out"),
                       ("cams.npz", "out"), ("summary.json", "metric"))),),
    options=(
        Option("if_enabled", bool, False, "run the review only when review.enabled is true, else write empty reports "
               "(what dvc repro and the KFP pipeline pass); without it the review runs whatever review.enabled says",
               pipeline=True),
        Option("accept", int, 0, "run no review: write the top N suspects of the last one into --label-overrides "
               "as proposals for a person to confirm"),
        Option("label_overrides", str, "data/label_overrides.csv", "the label decisions file --accept writes to"),
    ),
)
FILES = ("suspects.csv", "pred_probs.csv", "gallery.html", "cams.npz", "summary.json")


@under_spec(SPEC)
def run(params, shards: str | Path, out: str | Path, if_enabled: bool = False, accept: int = 0,
        label_overrides: str | Path = "data/label_overrides.csv") -> dict:
    """Review the train and val labels of ``shards`` into ``out`` (with ``if_enabled``, only when
    ``review.enabled``; or, with ``accept``, propose the top ``accept`` suspects of ``out/suspects.csv`` in
    ``label_overrides``)."""
    if accept:
        return _accept(Path(out), int(accept), Path(label_overrides))
    if if_enabled and not params.review.enabled:
        return _disabled(Path(out))
    if not params.review.enabled:
        log.info("review.enabled is false, but the review was asked for by hand: it runs (review.enabled decides "
                 "only whether dvc repro and the pipeline run it)")
    return _review(params, Path(shards), Path(out))


def _accept(out: Path, n: int, overrides_path: Path) -> dict:
    import datetime

    from components.core.contract.errors import DataError, ParamsError
    from components.core.data import manifest, overrides

    if n < 0:
        raise ParamsError(f"--accept {n}: give the number of top suspects to propose (>= 1)")
    path = out / "suspects.csv"
    if not path.is_file():
        raise DataError(f"{path} not found: run the review first (review.enabled: true, then dvc repro or "
                        "cxr review-labels)")
    suspects = manifest.read(path, required=("path", "given_label", "suggested_label", "score"))
    when = datetime.date.today().isoformat()
    result = overrides.propose(overrides_path, suspects.sort_values("rank", kind="stable"), n, when)
    log.info("proposed %d relabels in %s: %s", result["proposed"], overrides_path, result["next"])
    return result


def _disabled(out: Path) -> dict:
    from components.core.contract.fsutil import atomic_path, write_json
    from components.core.eval import label_review
    from components.core.eval.label_review import SUSPECT_COLUMNS

    summary = {"enabled": False, "note": "label review is off in the pipeline (review.enabled: false); "
                                         "`cxr review-labels` typed by hand runs it"}
    with atomic_path(out, directory=True) as tmp:
        (tmp / "suspects.csv").write_text(",".join(SUSPECT_COLUMNS) + "\n")
        (tmp / "pred_probs.csv").write_text("path,given_label,fold\n")
        (tmp / "gallery.html").write_text("<!doctype html><html><body><h1>Label review</h1><p>Off in the pipeline: "
                                          "set review.enabled: true in params.yaml, then dvc repro; or run "
                                          "<code>cxr review-labels</code> by hand.</p></body></html>\n")
        np.savez(tmp / "cams.npz", **label_review.empty_cams())
        write_json(tmp / "summary.json", summary)
    return summary


def _review(params, shards: Path, out: Path) -> dict:
    import pandas as pd

    from components.core.contract.errors import DataError
    from components.core.contract.fsutil import atomic_path, write_json, write_text
    from components.core.contract.params.train import AugmentConfig
    from components.core.data import shards as shard_io
    from components.core.eval import label_review
    from components.core.model import models

    models.require_tensorflow()
    started = time.perf_counter()
    cfg = params.review
    meta = shard_io.read_meta(shards)
    classes = list(params.data.classes)
    if meta.classes != classes:
        raise DataError(f"the shards hold {meta.classes}; params ask for {classes}: re-run `cxr preprocess`")
    parts = [shard_io.load_split(shards, s) for s in ("train", "val")]
    rows = pd.concat([p.rows.assign(split=s) for p, s in zip(parts, ("train", "val"), strict=True)],
                     ignore_index=True)
    y = np.concatenate([p.y for p in parts]).astype(int)
    x = label_review.resize(np.concatenate([np.asarray(p.x) for p in parts]), cfg.image_size)
    fold_of = label_review.folds(y, rows["patient_id"].astype(str).to_numpy(), cfg.folds, cfg.seed)
    augment = AugmentConfig() if cfg.augment else None
    probs, fold_models, fold_seconds = label_review.out_of_fold(x, y, fold_of, len(classes), cfg, augment)
    issues = label_review.find_issues(y, probs)
    suspects = label_review.suspects_table(rows, y, probs, fold_of, issues, classes)
    agreement = float((probs.argmax(axis=1) == y).mean())
    top = suspects.head(cfg.gallery)
    note = (f"{len(suspects)} suspects among {len(y)} training and validation images ({cfg.folds} patient-grouped "
            f"folds, {cfg.backbone} at {cfg.image_size} px, {cfg.epochs} epochs each; confident learning, ranked "
            f"by the out-of-fold probability of the given label). Showing the top {len(top)}. Nothing changes "
            "until a person decides: cxr review-labels serve opens the review page, which writes each decision to "
            "data/label_overrides.csv as a confirmed line.")
    page = label_review.gallery_html(top, x, issues[:len(top)], fold_models, classes, "Label review: suspects", note)
    cams = label_review.suspect_cams(suspects, x, issues, fold_models, classes)
    pred = pd.DataFrame(probs.round(6), columns=[f"p_{c}" for c in classes])
    pred.insert(0, "fold", fold_of)
    pred.insert(0, "given_label", [classes[i] for i in y])
    pred.insert(0, "path", rows["path"].to_numpy())
    per_class = {c: int((suspects["given_label"] == c).sum()) for c in classes}
    summary = {
        "enabled": True, "images": len(y), "suspects": len(suspects), "suspect_share": round(len(suspects) / len(y), 4),
        "suspects_by_given_label": per_class, "folds": cfg.folds, "backbone": cfg.backbone, "weights": cfg.weights,
        "image_size": cfg.image_size, "epochs": cfg.epochs, "classes": classes, "resize": meta.resize,
        "augment": bool(cfg.augment),
        "out_of_fold_agreement": round(agreement, 4), "fold_seconds": [round(s, 1) for s in fold_seconds],
        "seconds": round(time.perf_counter() - started, 1), "gallery": len(top),
        "images_trained": int(cfg.epochs * sum(int((fold_of != k).sum()) for k in range(cfg.folds))),
    }
    with atomic_path(out, directory=True) as tmp:
        suspects.to_csv(tmp / "suspects.csv", index=False, lineterminator="\n")
        pred.to_csv(tmp / "pred_probs.csv", index=False, lineterminator="\n")
        write_text(tmp / "gallery.html", page)
        np.savez_compressed(tmp / "cams.npz", **cams)
        write_json(tmp / "summary.json", summary)
    log.info("label review: %d suspects among %d images (out-of-fold agreement %.3f); %.0f s; see %s",
             len(suspects), len(y), agreement, summary["seconds"], out / "gallery.html")
    return summary
