"""External test sets (``evaluate.external``): data from other hospitals, never trained or tuned on.

Each set goes through the same code as the main data (:func:`components.core.data.sources.ingest_into`
then :func:`components.core.data.validation.validate_into`, with its own manifest, quarantine and bias
audit), then every usable image is decoded once at the model's input size into
``<out>/<name>/test_*.npy`` shards. Images whose sha256 is also in the main data set are dropped
(and counted): an external set must not contain training images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from components.core.contract.errors import DataError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="external",
    help="ingest, validate and decode the external test sets (evaluate.external)",
    params=("data", "validate", "preprocess", "train.image_size", "evaluate.external"),
    inputs=(Port("main_manifest", "data/validated/manifest.csv",
                 "the main data: external images also found there are dropped", kind="file"),),
    outputs=(Port("out", "data/external", "one folder per external set (raw, validated, shards)"),),
)


def _data_section(data, ext):
    """The ``data`` params of one external set: the main data's classes, the set's own source."""
    from components.core.contract.params.data import DataConfig

    base = data.model_dump(mode="json")
    merged = {**base, "layout": "auto",  # the set's own layout, whatever the main data's is
              "source": ext.source if ext.source in ("kaggle", "demo") else "dir",
              "path": ext.path if ext.source in ("dir", "dvc") else None,  # dvc: the URI (ingest fetches it)
              "root": ext.root if ext.source == "dir" else None,
              "label_aliases": {**base["label_aliases"], **ext.label_aliases}, "exclude_labels": ext.exclude_labels}
    if ext.kaggle_dataset:
        merged["kaggle_dataset"] = ext.kaggle_dataset
    if ext.demo is not None:
        merged["demo"] = ext.demo.model_dump()
    return DataConfig.model_validate({k: v for k, v in merged.items() if v is not None})


@under_spec(SPEC)
def run(params, main_manifest: str | Path, out: str | Path) -> dict:
    """Prepare every external set under ``out``; ``main_manifest`` is the validated main data."""
    from components.core.contract.fsutil import atomic_path, write_json
    from components.core.contract.params.evaluate import applicable_external
    from components.core.data import manifest, sources
    from components.core.data.images import decode_files
    from components.core.data.shards import ShardMeta
    from components.core.data.validation import validate_into

    main = manifest.read(main_manifest, required=("path", "sha256"))
    main_sha = set(main["sha256"])
    size, resize = params.train.image_size, params.preprocess.resize
    classes = list(params.data.classes)
    # an external set may hold one class only: the class-share expectation cannot be critical here
    vcfg = params.validate_.model_copy(update={"critical": [c for c in params.validate_.critical
                                                             if c != "class_share"]})
    summary: dict = {"sets": {}}
    with atomic_path(out, directory=True) as tmp:
        used = applicable_external(params)
        skipped = [e.name for e in params.evaluate.external if e not in used]
        if skipped:
            summary["skipped"] = {name: f"a synthetic (demo) set, and data.source is {params.data.source!r} "
                                        "(set with_real_data: true to use it)" for name in skipped}
            log.info("external sets %s skipped: synthetic, and the main data are real", skipped)
        for ext in used:
            d = tmp / ext.name
            ingested = sources.ingest_into(_data_section(params.data, ext), d / "raw",
                                           data_uri=ext.path if ext.source == "dvc" else "")
            sources.write_account(ingested, d / "reports" / "ingest")
            checked = validate_into(classes, vcfg, d / "raw", d / "validated", d / "reports")
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
                "skipped_at_ingest": len(ingested.get("skipped") or []),
                "quarantined": checked["quarantined"], "removed_as_in_main_data": int(leaked.sum()),
                "images": len(rows), "per_class": {c: int((rows["label"] == c).sum()) for c in classes},
                "sources": sorted(set(rows["source"].astype(str)) - {""}),
                "bias_audit_flagged": checked["source_bias_audit"].get("flagged"),
            }
            log.info("external set %s: %d images (%d quarantined, %d also in the main data)", ext.name, len(rows),
                     checked["quarantined"], int(leaked.sum()))
        write_json(tmp / "summary.json", summary)
    return summary
