"""External test sets (``evaluate.external``): data from other hospitals, never trained or tuned on.

Each set goes through the same code as the main data (``ingest.run`` then ``validate.run``, with
its own manifest, quarantine and bias audit), then every usable image is decoded once at the
model's input size into ``<out>/<name>/test_*.npy`` shards. Images whose sha256 is also in the
main data set are dropped (and counted): an external set must not contain training images.

This module composes two other steps on purpose: an external set is "the data plane again", and
running it through the very same functions is the point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components import ingest, validate
from components.core import manifest
from components.core.config import Params, parse_params
from components.core.errors import DataError
from components.core.fsutil import atomic_path, write_json
from components.core.images import decode_files
from components.core.shards import ShardMeta


def _set_params(params: Params, ext) -> Params:
    raw = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    data = {**raw["data"], "source": ext.source if ext.source in ("kaggle", "demo") else "dir",
            "path": ext.path if ext.source == "dir" else None,
            "label_aliases": {**raw["data"]["label_aliases"], **ext.label_aliases},
            "exclude_labels": ext.exclude_labels}
    if ext.kaggle_dataset:
        data["kaggle_dataset"] = ext.kaggle_dataset
    if ext.demo is not None:
        data["demo"] = ext.demo.model_dump()
    raw["data"] = {k: v for k, v in data.items() if v is not None}
    raw["validate"]["critical"] = [c for c in raw["validate"]["critical"] if c != "class_share"]
    return parse_params(raw, f"evaluate.external[{ext.name}]")


def _ingest(ext, p: Params, out: Path) -> dict:
    return ingest.fetch_dvc(ext.path, out) if ext.source == "dvc" else ingest.run(p, out)


def run(params: Params, main_manifest: str | Path, out_dir: str | Path) -> dict:
    """Prepare every external set under ``out_dir``; ``main_manifest`` is the validated main data."""
    main = manifest.read(main_manifest, required=("path", "sha256"))
    main_sha = set(main["sha256"])
    size, resize = params.train.image_size, params.preprocess.resize
    classes = list(params.data.classes)
    summary: dict = {"sets": {}}
    with atomic_path(out_dir, directory=True) as tmp:
        for ext in params.evaluate.external:
            p = _set_params(params, ext)
            d = tmp / ext.name
            ingested = _ingest(ext, p, d / "raw")
            checked = validate.run(p, d / "raw", d / "validated", d / "reports")
            rows = manifest.read(d / "validated" / manifest.MANIFEST_NAME)
            leaked = rows["sha256"].isin(main_sha)
            rows = rows[~leaked].reset_index(drop=True)
            if rows.empty:
                raise DataError(f"external set {ext.name!r} has no usable images left after validation and "
                                "removing images that are also in the main data")
            decoded = decode_files([str(d / "raw" / x) for x in rows["path"]], size, resize,
                                   params.validate_.max_pixels, params.preprocess.workers, f"external {ext.name}")
            bad = [r for r in decoded if isinstance(r, str)]
            if bad:
                raise DataError(f"external set {ext.name!r}: {len(bad)} images failed to decode: {bad[:3]}")
            np.save(d / "test_x.npy", np.stack(decoded))
            np.save(d / "test_y.npy", np.array([classes.index(c) for c in rows["label"]], dtype=np.int64))
            manifest.write(rows, d / "test.csv", sort=False)
            write_json(d / "meta.json", ShardMeta(classes=classes, image_size=size, resize=resize).as_dict())
            summary["sets"][ext.name] = {
                "source": ext.source, "ingested": ingested["images"], "usable": checked["usable"],
                "quarantined": checked["quarantined"], "removed_as_in_main_data": int(leaked.sum()),
                "images": len(rows), "per_class": {c: int((rows["label"] == c).sum()) for c in classes},
                "sources": sorted(set(rows["source"].astype(str)) - {""}),
                "bias_audit_flagged": checked["source_bias_audit"].get("flagged"),
            }
        write_json(tmp / "summary.json", summary)
    return summary
