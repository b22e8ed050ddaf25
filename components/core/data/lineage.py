"""Lineage: which patients and images a model trained and validated on, and which test patients may therefore
compare two models.

* **The record.** Every model version carries the patients it trained and validated on, as SHA-256 digests of the
  patient ids (never the ids), the content digests of its images, its data version and params hash
  (:func:`lineage`; train writes it, register tags the version with it).
* **Clean ground.** Candidate and champion are compared only on test patients that neither of them trained or
  validated on, by patient id and by image content; the patients left out are counted, with the reason
  (:func:`comparison_ground`). Too few left, or a champion without lineage, makes the comparison
  *incomparable* (the gate's statistics, :mod:`components.core.stats.gating`, decide what that means).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

DIGEST_NAMESPACE = "cxr-mlops/patient/"


def patient_digest(patient_id: str) -> str:
    """A patient id's digest (128 bits of SHA-256): comparable across models, not the id itself."""
    return hashlib.sha256((DIGEST_NAMESPACE + str(patient_id)).encode()).hexdigest()[:32]


def digests(patient_ids: Iterable[str]) -> list[str]:
    return sorted({patient_digest(p) for p in patient_ids})


def set_digest(items: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def image_digest(sha256: str) -> str:
    """An image's content digest in lineage: the first 128 bits of its sha256 (the file's bytes)."""
    return str(sha256)[:32]


def lineage(train_ids: Iterable[str], val_ids: Iterable[str], *, data_version: str, manifest_digest: str,
            params_hash: str, git_commit: str, train_images: Iterable[str] = (),
            val_images: Iterable[str] = ()) -> dict:
    """What a model version must carry so a later gate can tell which patients, and which images (by content:
    a renamed or re-ingested file keeps its sha256), it has seen."""
    train, val = digests(train_ids), digests(val_ids)
    images = {"train": sorted({image_digest(h) for h in train_images if h}),
              "val": sorted({image_digest(h) for h in val_images if h})}
    return {"schema": 2, "digest": "sha256:" + DIGEST_NAMESPACE + "<patient_id>, first 128 bits",
            "image_digest": "sha256 of the image file, first 128 bits",
            "patients": {"train": train, "val": val}, "images": images,
            "counts": {"train": len(train), "val": len(val), "train_images": len(images["train"]),
                       "val_images": len(images["val"])},
            "seen_digest": set_digest(train + val), "data_version": data_version,
            "manifest_digest": manifest_digest, "params_hash": params_hash, "git_commit": git_commit}


def manifest_digest(frames) -> str:
    """A digest of which images, labels and patients a split holds (formatting and order do not matter)."""
    rows = []
    for name, df in frames.items():
        sha = df["sha256"] if "sha256" in df.columns else df["path"]
        rows += [f"{name}\x1f{p}\x1f{lbl}\x1f{s}\x1f{patient_digest(pid)}"
                 for p, lbl, s, pid in zip(df["path"], df["label"], sha, df["patient_id"], strict=True)]
    return set_digest(rows)


def digested_rows(df):
    """Manifest rows safe to log (MLflow datasets): the patient id replaced by its digest."""
    keep = [c for c in ("path", "label", "source", "sha256", "width", "height", "format") if c in df.columns]
    out = df[keep].copy()
    out["patient"] = [patient_digest(p) for p in df["patient_id"]]
    return out


def seen_patients(record: dict | None) -> set[str] | None:
    """The digests a model trained or validated on; None when the record is missing."""
    if not record or "patients" not in record:
        return None
    return set(record["patients"].get("train", [])) | set(record["patients"].get("val", []))


def seen_images(record: dict | None) -> set[str] | None:
    """The image content digests a model trained or validated on; None when the record has none (lineage
    schema 1: patients only)."""
    if not record or "images" not in record:
        return None
    return set(record["images"].get("train", [])) | set(record["images"].get("val", []))


# ---------------------------------------------------------------- operating points


def comparison_ground(test_patients: np.ndarray, cand_seen: set[str] | None, champ_seen: set[str] | None,
                      minimum: int, test_images: np.ndarray | None = None, cand_images: set[str] | None = None,
                      champ_images: set[str] | None = None) -> dict:
    """Which test patients may compare the two models, and why the others may not: a patient either model
    trained or validated on (by patient id), or one with an image either model saw (by content, whatever its
    name or patient id: a file without an id is its own patient, so a renamed copy would otherwise slip in)."""
    test_patients = np.asarray(test_patients).astype(str)
    uniq = sorted(set(test_patients))
    dig = {p: patient_digest(p) for p in uniq}
    content: dict[str, set[str]] = {p: set() for p in uniq}
    if test_images is not None:
        for p, h in zip(test_patients, np.asarray(test_images).astype(str), strict=True):
            if h and h != "nan":
                content[p].add(image_digest(h))
    excluded = {"champion_trained_or_validated": 0, "candidate_trained_or_validated": 0,
                "champion_saw_an_image": 0, "candidate_saw_an_image": 0}
    keep = []
    for p in uniq:
        if champ_seen is not None and dig[p] in champ_seen:
            excluded["champion_trained_or_validated"] += 1
        elif cand_seen is not None and dig[p] in cand_seen:
            excluded["candidate_trained_or_validated"] += 1
        elif champ_images and content[p] & champ_images:
            excluded["champion_saw_an_image"] += 1
        elif cand_images and content[p] & cand_images:
            excluded["candidate_saw_an_image"] += 1
        else:
            keep.append(p)
    out = {"patients_total": len(uniq), "patients_used": len(keep), "excluded": excluded, "keep": keep,
           "min_comparison_patients": minimum,
           "by_content": test_images is not None and bool(champ_images)}
    if champ_seen is None:
        out.update(status="incomparable", reason="the champion has no lineage record (registered before lineage "
                   "was recorded), so the patients it trained on are unknown")
    elif len(keep) < minimum:
        seen = excluded["champion_trained_or_validated"] + excluded["champion_saw_an_image"]
        out.update(status="incomparable", reason=f"only {len(keep)} test patients are new to both models "
                   f"(gate.min_comparison_patients is {minimum}; {seen} were in the champion's training or "
                   "validation data)")
    else:
        out.update(status="compared", reason="")
    if champ_seen is not None and champ_images is None:
        out["note"] = ("the champion's lineage has patient digests only (schema 1): test images it saw under another "
                       "patient id cannot be excluded")
    return out
