"""What the label-review page works on: the suspects of the last review in the order a person sees them, the
films and Grad-CAM maps, and the decisions (:mod:`components.core.data.overrides`), apart from HTTP.

* **One patient at a time.** The queue holds the suspects of ``suspects.csv`` grouped by patient: patients in
  the order of their best-ranked suspect, a patient's suspects in rank order, so the page stays on a patient
  until each of their suspect films is decided or skipped.
* **Each decision is a confirmed line at once** (:func:`~components.core.data.overrides.decide`: the file read
  fresh, the image's line replaced or appended, written to a temporary file and renamed). ``keep`` records that
  the given label is right; ``relabel`` and ``exclude`` change what ingest gives the next ``dvc repro``.
* **Undo** restores the line the last decision replaced (or removes it), newest first, for this session.
* **Progress** counts the suspects with a confirmed line, whoever wrote it (a line typed by hand counts too).
"""

from __future__ import annotations

import base64
import collections
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.contract.errors import DataError
from components.core.data import overrides

FILM_SIDE = 512  # the film as the page shows it (longest side, pixels)
CAM_SIDE = 320  # the model's view with a Grad-CAM overlay
THUMB_SIDE = 160  # the patient's other images
KEYS = {"keep": "k", "exclude": "x", "skip": "s", "undo": "u"}  # relabel: 1..9, in data.classes order


def _png_uri(gray_or_rgb: np.ndarray) -> str:
    from components.core.eval.gradcam import to_png

    return "data:image/png;base64," + base64.b64encode(to_png(gray_or_rgb)).decode()


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """The whole image with its longest side at most ``side`` (never enlarged)."""
    from PIL import Image

    h, w = gray.shape
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return gray
    return np.asarray(Image.fromarray(gray).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                   Image.Resampling.LANCZOS))


@dataclass
class ReviewSession:
    """The suspects of one review (``review_dir``: ``reports/label_review``) over the ingested images
    (``raw``: ``data/raw`` with its ``manifest.csv``), deciding into ``overrides_path`` as ``who``."""

    review_dir: Path
    raw: Path
    overrides_path: Path
    who: str
    suspects: pd.DataFrame = field(init=False)
    classes: list[str] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    undo_stack: list[tuple[int, dict | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from components.core.contract.fsutil import read_json
        from components.core.data import manifest

        self.review_dir, self.raw = Path(self.review_dir), Path(self.raw)
        self.overrides_path = Path(self.overrides_path)
        if not self.who.strip() or self.who.strip() == overrides.PROPOSER:
            raise DataError("the review page needs a person's name for the who column: pass --who NAME")
        summary_path = self.review_dir / "summary.json"
        if not summary_path.is_file():
            raise DataError(f"{summary_path} not found: run the review first (cxr review-labels)")
        self.summary = read_json(summary_path)
        if not self.summary.get("enabled", False):
            raise DataError(f"{self.review_dir} holds the empty reports of a pipeline run with review.enabled: false: "
                            "run `cxr review-labels` (typed by hand it always runs), then serve the page")
        self.classes = list(self.summary["classes"])
        suspects = manifest.read(self.review_dir / "suspects.csv",
                                 required=("path", "patient_id", "given_label", "suggested_label", "score", "sha256"))
        if (suspects["sha256"].astype(str).str.len() != 64).any():
            raise DataError(f"{self.review_dir / 'suspects.csv'}: suspects without sha256 (the review ran on shards "
                            "made without validate): run the pipeline through validate, then cxr review-labels")
        cams = np.load(self.review_dir / "cams.npz")
        if list(cams["path"]) != list(suspects["path"].astype(str)):
            raise DataError(f"{self.review_dir}: cams.npz does not belong to suspects.csv: run cxr review-labels again")
        self.maps = cams["maps"]
        suspects = suspects.assign(row=np.arange(len(suspects)))
        best = suspects.groupby("patient_id")["rank"].transform("min")
        self.suspects = suspects.assign(best=best).sort_values(["best", "rank"], kind="stable").reset_index(drop=True)
        probs = pd.read_csv(self.review_dir / "pred_probs.csv")
        self.probs = probs.set_index("path")
        self.manifest = manifest.read(self.raw / "manifest.csv")
        self.by_patient = {p: g for p, g in self.manifest.groupby(self.manifest["patient_id"].astype(str))}
        self.index_of = {p: i for i, p in enumerate(self.suspects["path"])}
        self.resize = self.summary.get("resize", "crop")
        self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()
        if not self.overrides_path.is_file():
            overrides.write(self.overrides_path, overrides.empty())

    # ------------------------------------------------------------------ state
    def decisions(self) -> dict[str, dict]:
        """sha256 → the image's line in the overrides file (read fresh: hand edits count)."""
        lines = overrides.read(self.overrides_path, self.classes)
        return {r["sha256"]: r for r in lines.to_dict("records")}

    def progress(self, decided: dict[str, dict] | None = None) -> dict:
        decided = self.decisions() if decided is None else decided
        done = sum(1 for s in self.suspects["sha256"] if decided.get(s, {}).get("status") == "confirmed")
        return {"reviewed": done, "total": len(self.suspects)}

    def next_open(self, after: int = -1, decided: dict[str, dict] | None = None) -> int | None:
        """The first suspect after ``after`` (wrapping around) without a confirmed line; None when all have one."""
        decided = self.decisions() if decided is None else decided
        n = len(self.suspects)
        for step in range(1, n + 1):
            i = (after + step) % n
            if decided.get(self.suspects.at[i, "sha256"], {}).get("status") != "confirmed":
                return i
        return None

    def state(self) -> dict:
        decided = self.decisions()
        return {"who": self.who, "classes": self.classes, "keys": KEYS, "overrides": str(self.overrides_path),
                "first": self.next_open(-1, decided), **self.progress(decided),
                "review": {k: self.summary.get(k) for k in ("images", "suspects", "folds", "backbone", "image_size",
                                                             "epochs", "out_of_fold_agreement")}}

    # ------------------------------------------------------------------ one suspect, as the page shows it
    def item(self, i: int) -> dict:
        if not 0 <= i < len(self.suspects):
            raise IndexError(f"suspect {i} is not in 0..{len(self.suspects) - 1}")
        decided = self.decisions()
        with self.lock:
            view = self._cache.get(i)
        if view is None:
            view = self._view(i)
            with self.lock:
                self._cache[i] = view
                while len(self._cache) > 64:
                    self._cache.popitem(last=False)
        s = self.suspects.iloc[i]
        others = [{**o, "decision": _short(decided.get(o["sha256"]))} for o in view["others"]]
        return {**{k: v for k, v in view.items() if k != "others"}, "others": others,
                "decision": _short(decided.get(s["sha256"])), "next_open": self.next_open(i, decided),
                **self.progress(decided)}

    def _view(self, i: int) -> dict:
        from components.core.data.images import ImageError, decode_gray, fit_square
        from components.core.eval.gradcam import overlay

        s = self.suspects.iloc[i]
        gray = decode_gray((self.raw / s["path"]).read_bytes())
        model_view = fit_square(gray, CAM_SIDE, self.resize)
        cams = [_upsample(self.maps[int(s["row"])][j], CAM_SIDE) for j in (0, 1)]
        probs = {c: None for c in self.classes}
        if s["path"] in self.probs.index:
            row = self.probs.loc[s["path"]]
            probs = {c: round(float(row[f"p_{c}"]), 4) for c in self.classes}
        patient = str(s["patient_id"])
        siblings = self.suspects.index[self.suspects["patient_id"].astype(str) == patient].tolist()
        others = []
        for o in self.by_patient.get(patient, pd.DataFrame()).itertuples():
            if o.path == s["path"]:
                continue
            try:
                thumb = _png_uri(_shrink(decode_gray((self.raw / o.path).read_bytes()), THUMB_SIDE))
            except (OSError, ImageError) as err:  # one unreadable image must not hide the others
                thumb, o_err = None, str(err)[:200]
            else:
                o_err = None
            sha = str(getattr(o, "sha256", "") or overrides.file_sha256(lambda p: (self.raw / p).read_bytes(), o.path))
            others.append({"path": o.path, "label": o.label, "sha256": sha, "image": thumb, "error": o_err,
                           "suspect": self.index_of.get(o.path), "reviewed": o.path in self.probs.index})
        return {
            "index": i, "rank": int(s["rank"]), "path": s["path"], "sha256": s["sha256"], "patient": patient,
            "patient_suspects": siblings, "patient_position": siblings.index(i) + 1,
            "given": s["given_label"], "suggested": s["suggested_label"], "score": float(s["score"]),
            "p_suggested": float(s["p_suggested"]), "split": str(s.get("split", "")), "fold": int(s["fold"]) + 1,
            "probabilities": probs, "width": int(gray.shape[1]), "height": int(gray.shape[0]),
            "film": _png_uri(_shrink(gray, FILM_SIDE)),
            "cam_suggested": _png_uri(overlay(model_view, cams[0])),
            "cam_given": _png_uri(overlay(model_view, cams[1])),
            "others": others,
        }

    # ------------------------------------------------------------------ decisions
    def decide(self, i: int, action: str, label: str = "", note: str = "") -> dict:
        """Write the decision on suspect ``i`` (keep | relabel | exclude) as a confirmed line; returns the line."""
        if not 0 <= i < len(self.suspects):
            raise IndexError(f"suspect {i} is not in 0..{len(self.suspects) - 1}")
        s = self.suspects.iloc[i]
        if action == "keep":
            label = s["given_label"]
        elif action == "relabel" and label not in self.classes:
            raise DataError(f"relabel to one of {self.classes}, got {label!r}")
        if action == "relabel" and label == s["given_label"]:
            action = "keep"  # relabelling to the label it has is keeping it
        evidence = (f"p({s['given_label']})={float(s['score']):.3f}, p({s['suggested_label']})="
                    f"{float(s['p_suggested']):.3f} out of fold (review rank {int(s['rank'])})")
        what = {"keep": f"the label {label} is right", "exclude": "not a usable film of any class",
                "relabel": f"the film shows {label}, not {s['given_label']}"}.get(action, action)
        why = f"review page: {what}; {evidence}" + (f"; note: {note.strip()}" if note.strip() else "")
        with self.lock:
            previous, line = overrides.decide(self.overrides_path, s["sha256"], action, label, self.who, why,
                                              s["path"], self.classes)
            self.undo_stack.append((i, previous))
        return line

    def undo(self) -> int | None:
        """Undo this session's last decision; returns the suspect it was about (None: nothing to undo)."""
        with self.lock:
            if not self.undo_stack:
                return None
            i, previous = self.undo_stack.pop()
            overrides.restore(self.overrides_path, self.suspects.at[i, "sha256"], previous, self.classes)
        return i


def _short(line: dict | None) -> dict | None:
    if line is None:
        return None
    return {k: line[k] for k in ("action", "label", "status", "who", "when")}


def _upsample(m: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(m).resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255.0
