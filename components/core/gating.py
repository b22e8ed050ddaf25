"""The gate's checks, shared by the gate step and (later) promotion: thresholds on the candidate's
metrics, and the candidate against the current champion re-scored on the same test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.core import metrics as M
from components.core import registry, shards
from components.core.errors import DataError
from components.core.images import decode_files


def gated_metrics(m: dict, params) -> dict[str, float | None]:
    """The metrics the gate looks at, flattened: accuracy, macro_f1, macro_roc_auc, recall.<CLASS>."""
    out = {"accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1"), "macro_roc_auc": m.get("macro_roc_auc")}
    for c in params.data.classes:
        out[f"recall.{c}"] = (m.get("per_class", {}).get(c) or {}).get("recall")
    return out


def lower_ci_bounds(m: dict, params) -> dict[str, float | None]:
    """The lower ends of the patient-level bootstrap CIs of the gated metrics."""
    ci = m.get("ci") or {}

    def low(entry: dict | None) -> float | None:
        return entry.get("low") if entry else None

    out = {k: low(ci.get(k)) for k in ("accuracy", "macro_f1", "macro_roc_auc")}
    for c in params.data.classes:
        out[f"recall.{c}"] = low(((ci.get("per_class") or {}).get(c) or {}).get("sensitivity"))
    return out


def threshold_checks(m: dict, params) -> list[dict]:
    """``gate.min_*`` against the point estimates, or the CI lower bounds with ``gate.use_lower_ci``."""
    g = params.gate
    wanted = {"accuracy": g.min_accuracy, "macro_f1": g.min_macro_f1, "macro_roc_auc": g.min_roc_auc,
              **{f"recall.{c}": v for c, v in g.min_recall.items()}}
    points = gated_metrics(m, params)
    if g.use_lower_ci and not m.get("ci"):
        raise DataError("gate.use_lower_ci is on but the metrics have no bootstrap CIs: re-run `cxr evaluate` "
                        "with evaluate.bootstrap.resamples > 0")
    values = lower_ci_bounds(m, params) if g.use_lower_ci else points
    checks = []
    for name, threshold in wanted.items():
        value = values.get(name)
        ok = value is not None and value >= threshold
        label = f"{name} (lower 95% CI bound) >= {threshold}" if g.use_lower_ci else f"{name} >= {threshold}"
        check = {"check": label, "kind": "threshold", "metric": name, "value": value, "threshold": threshold,
                 "passed": bool(ok)}
        if g.use_lower_ci:
            check["point"] = points.get(name)
        checks.append(check)
    return checks


def champion_test_arrays(bundle: registry.ModelBundle, shards_dir: Path, images_dir: Path | None,
                         max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """The test split as the champion needs it (its own input size and resize mode)."""
    meta = shards.read_meta(shards_dir)
    test = shards.load_split(shards_dir, "test")
    if bundle.image_size == meta.image_size and bundle.resize == meta.resize:
        return test.x, test.y
    if images_dir is None:
        raise DataError(f"the champion takes {bundle.image_size}px images; pass --images to decode the test split")
    decoded = decode_files([str(images_dir / p) for p in test.rows["path"]], bundle.image_size, bundle.resize,
                           max_pixels, desc="champion test set")
    bad = [d for d in decoded if isinstance(d, str)]
    if bad:
        raise DataError(f"{len(bad)} test images could not be decoded for the champion: {bad[:3]}")
    return np.stack(decoded)[..., None], test.y


def champion_checks(candidate: dict, params, shards_dir: Path, images_dir: Path | None) -> tuple[list, dict]:
    mv = registry.version_by_alias(params.registry.model_name, registry.CHAMPION)
    if mv is None:
        return [], {"exists": False, "note": "no champion yet: thresholds only"}
    bundle = registry.load(f"models:/{params.registry.model_name}/{mv.version}")
    info = {"exists": True, "version": str(mv.version), "run_id": mv.run_id}
    classes = shards.read_meta(shards_dir).classes
    if bundle.classes != classes:
        check = {"check": "champion comparable", "kind": "vs_champion", "metric": "classes", "value": classes,
                 "threshold": bundle.classes, "passed": False,
                 "note": "the champion predicts other classes; register this task under another registry.model_name"}
        return [check], info
    x, y = champion_test_arrays(bundle, shards_dir, images_dir, params.validate_.max_pixels)
    proba = np.asarray(bundle.model.predict(x, batch_size=64, verbose=0), dtype=np.float64)
    champ = gated_metrics(M.classification_metrics(y, proba, classes), params)
    info["metrics"] = champ
    cand = gated_metrics(candidate, params)
    checks = []
    for name, cv in cand.items():
        ch = champ.get(name)
        if cv is None or ch is None:
            continue
        floor = round(ch - params.gate.max_regression, 6)
        checks.append({"check": f"{name} >= champion {ch:.4f} - {params.gate.max_regression}", "kind": "vs_champion",
                       "metric": name, "value": cv, "threshold": floor, "champion": ch, "passed": bool(cv >= floor)})
    return checks, info
