"""Gate: decide whether the candidate model may be registered (:mod:`components.core.stats.gating` and
:mod:`components.core.stats.comparison` have the maths).

Checks, every one in ``reports/gate.json`` with its value, CI, threshold or margin, and the patients it rests
on (positive patients for a sensitivity, negative ones for a specificity):

* **absolute thresholds** (``gate.min_*``) on the candidate's test metrics, sensitivity and
  specificity being those of the decision serving returns (the operating points chosen on the
  validation split); with ``gate.use_lower_ci`` on the lower bound of the patient-level CI (exact or
  score intervals: they do not collapse at 0 or 1);
* **paired non-inferiority against the champion** on the test patients neither model trained or
  validated on (lineage: patient digests and image sha256), per metric (accuracy, macro F1, macro ROC-AUC, the
  ROC-AUC of each class with an operating point): lower CI bound of (candidate - champion) > -margin; an interval
  entirely below 0 fails; one that contains 0 but reaches below -margin fails when the comparison was powered and
  is *inconclusive* when not (``gate.on_underpowered``; ``summary`` says in one sentence how many patients it
  would take); too few clean patients, or a champion without lineage, is *incomparable* (``gate.on_incomparable``).
  The champion is skipped only when the candidate's weights are byte-identical to it (same content), never
  because of a shared run id;
* **training**: a model whose training failed (``training_failed`` in ``train_summary.json``: one class for
  every validation image) or that predicts one class for every test image is refused;
* **shortcut risk** (source-bias audit, stress tests) blocks unless ``gate.accept_shortcut_risk``
  gives a written reason; optional minimums per external set (``gate.external``).

``operating_points`` reports what each served threshold promises (expected out-of-sample sensitivity and its
lower bound) and how much it moves over validation patients; no check reads them.
The report names the champion it was made against; ``cxr promote`` refuses a version gated against
another champion than the current one. A failed gate is a result (exit 0) unless ``--strict`` (exit 6).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from components.core.contract.errors import DataError, RefusedError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="gate",
    help="pass/fail the candidate: thresholds on the served decision, paired non-inferiority vs the champion, "
         "shortcut risk",
    params=("data.classes", "data.source", "validate.max_pixels", "evaluate.bootstrap", "evaluate.target_sensitivity",
            "gate",
            "registry", "mlflow"),
    inputs=(
        Port("metrics", "reports/metrics.json", "the candidate's test metrics (operating points, external sets)",
             kind="file"),
        Port("model_dir", "models", "the candidate model (model.keras, lineage.json)"),
        Port("shards", "data/shards", "the test split both models are scored on, the val split for threshold CIs"),
        Port("images", "data/raw", "image root (to decode the test split for a champion with another input size)"),
        Port("validation", "reports/validation/summary.json", "the validation summary (source-bias audit)",
             kind="file", optional=True),
    ),
    outputs=(Port("out", "reports/gate.json", "the decision: every check with value, CI, threshold or margin, "
                  "patients, result", kind="file", dvc=((".", "metric"),)),),
    options=(Option("strict", bool, False, "exit 6 when the gate fails (for CI)"),),
    dvc_deps=("reports/registry_state.json",),
    cache=False,
)


def _predict(model, x: np.ndarray) -> np.ndarray:
    from components.core.data import shards

    return np.asarray(shards.predict(model, x), dtype=np.float64)  # a block at a time: any split size


def champion_test_arrays(bundle, test, shards_meta, images_dir: Path | None, max_pixels: int) -> np.ndarray:
    """The test split as the champion needs it (its own input size and resize mode)."""
    from components.core.data.images import decode_files

    if bundle.image_size == shards_meta.image_size and bundle.resize == shards_meta.resize:
        return test.x
    if images_dir is None:
        raise DataError(f"the champion takes {bundle.image_size}px images; pass --images to decode the test split")
    from components.core.data import storage

    decoded = decode_files([storage.join(images_dir, p) for p in test.rows["path"]], bundle.image_size, bundle.resize,
                           max_pixels, desc="champion test set")
    bad = [d for d in decoded if isinstance(d, str)]
    if bad:
        raise DataError(f"{len(bad)} test images could not be decoded for the champion: {bad[:3]}")
    return np.stack(decoded)[..., None]


def champion_lineage(run_id: str | None) -> dict | None:
    """The lineage the champion's training run recorded (``lineage/lineage.json``), or None."""
    import mlflow

    if not run_id:
        return None
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/lineage/lineage.json")
    except Exception as err:  # older versions have none; the gate then says the ground is unknown
        log.warning("champion run %s has no lineage record (%s)", run_id, type(err).__name__)
        return None


def _champion(params, test, meta, images_dir, classes):
    """(info, probabilities on the test split, thresholds, its lineage record) of the current champion; ``info``
    holds the champion's weights digest (:func:`components.core.model.models.weights_digest`)."""
    from components.core.model import models
    from components.core.registry import registry

    name = params.registry.model_name
    mv = registry.version_by_alias(name, registry.CHAMPION)
    if mv is None:
        return {"exists": False, "note": "no champion yet: absolute thresholds only"}, None, {}, None
    bundle = registry.load(f"models:/{name}/{mv.version}")
    info = {"exists": True, "version": str(mv.version), "run_id": mv.run_id, "image_size": bundle.image_size,
            "resize": bundle.resize, "operating_points": bundle.thresholds,
            "weights_sha256": models.weights_digest(bundle.model)}
    if bundle.classes != classes:
        info["incomparable"] = (f"the champion predicts {bundle.classes}, the candidate {classes}: register this task "
                                "under another registry.model_name")
        return info, None, {}, None
    x = champion_test_arrays(bundle, test, meta, images_dir, params.validate_.max_pixels)
    record = champion_lineage(mv.run_id)
    info["lineage"] = {"available": record is not None,
                       **({"counts": record.get("counts"), "data_version": record.get("data_version")}
                          if record else {})}
    return info, _predict(bundle.model, x), bundle.thresholds, record


@under_spec(SPEC)
def run(params, metrics: str | Path, model_dir: str | Path, shards: str | Path, out: str | Path,
        images: str | Path | None = None, validation: str | Path | None = None, strict: bool = False) -> dict:
    """Gate the candidate (``model_dir`` + its ``metrics``) and write the decision to ``out``."""
    from components.core.contract.fsutil import read_json, write_json
    from components.core.data import lineage
    from components.core.data import shards as shard_io
    from components.core.model import models
    from components.core.registry import tracking
    from components.core.stats import decision, gating

    g, boot = params.gate, params.evaluate.bootstrap
    candidate_metrics = read_json(metrics)
    validation_summary = read_json(validation) if validation and Path(validation).is_file() else None
    model_dir, out_path = Path(model_dir), Path(out)
    tracking.setup(params)
    meta = shard_io.read_meta(shards)
    classes = meta.classes
    test, val = shard_io.load_split(shards, "test"), shard_io.load_split(shards, "val")
    model = models.load_model(model_dir / "model.keras")
    cand_digest = models.weights_digest(model)
    cand_lineage = read_json(model_dir / "lineage.json") if (model_dir / "lineage.json").is_file() else None
    cand_thresholds = {c: float(v["threshold"]) for c, v in
                       ((candidate_metrics.get("thresholds") or {}).get("val") or {}).items()}
    patients = test.rows["patient_id"].astype(str).to_numpy()
    test_sha = test.rows["sha256"].astype(str).to_numpy() if "sha256" in test.rows.columns else None
    p_cand = _predict(model, test.x)
    train_summary = model_dir / "train_summary.json"
    cand_stats, checks = decision.candidate_checks(test.y, p_cand, patients, classes, cand_thresholds, g, boot.level,
                                                   read_json(train_summary) if train_summary.is_file() else None)

    champion, p_champ, champ_thresholds, champ_record = _champion(params, test, meta,
                                                                  Path(images) if images else None, classes)
    comparison_ground: dict = {"status": "no_champion"}
    summary = None
    if champion["exists"] and champion.get("weights_sha256") == cand_digest:
        # re-gated after its own promotion (dvc repro does that): a model is not compared with itself. Known by
        # its content, never by its run id: a changed model from the champion's run is another model
        comparison_ground = {"status": "same_model", "reason": "the candidate's weights are byte-identical to the "
                             f"champion's ({cand_digest[:19]}…)"}
    elif champion["exists"]:
        if champion.get("incomparable"):
            comparison_ground = {"status": "incomparable", "reason": champion["incomparable"], "patients_used": 0,
                                 "min_comparison_patients": g.min_comparison_patients}
        else:
            comparison_ground = lineage.comparison_ground(
                patients, lineage.seen_patients(cand_lineage), lineage.seen_patients(champ_record),
                g.min_comparison_patients, test_images=test_sha, cand_images=lineage.seen_images(cand_lineage),
                champ_images=lineage.seen_images(champ_record))
        if comparison_ground["status"] == "compared":
            mask = np.isin(patients, comparison_ground["keep"])
            compared = sorted(set(cand_thresholds) | set(champ_thresholds))
            nis, info = decision.champion_checks(test.y[mask], p_cand[mask], p_champ[mask], patients[mask], classes,
                                                 compared, g, boot.level, boot.resamples, boot.seed)
            checks += nis
            summary = info.pop("summary")
            comparison_ground.update(info)
        else:
            checks.append(gating.incomparable_check(comparison_ground, g.on_incomparable))
        comparison_ground.pop("keep", None)
    shortcut = gating.shortcut_check(validation_summary, candidate_metrics, g.accept_shortcut_risk)
    if shortcut:
        checks.append(shortcut)
    checks += gating.external_checks(candidate_metrics, g.external)
    val_patients = val.rows["patient_id"].astype(str).to_numpy()
    thresholds = gating.operating_point_guarantees(val.y, _predict(model, val.x), val_patients, classes,
                                                   dict(params.evaluate.target_sensitivity), boot.resamples,
                                                   boot.seed, boot.level)
    outcome = decision.verdict(checks)
    result = {
        "passed": outcome["passed"],
        # failed (a check failed outright) | inconclusive (a comparison could not tell; `passed` then follows
        # gate.on_underpowered) | passed
        "decision": outcome["decision"],
        "summary": summary,
        "checks": checks,
        "failed": outcome["failed"],
        "model_name": params.registry.model_name,
        "candidate": {"run_id": candidate_metrics.get("run_id"), "weights_sha256": cand_digest,
                      "operating_points": cand_thresholds,
                      "metrics": {k: v["point"] for k, v in cand_stats.items()},
                      "lineage": (cand_lineage or {}).get("counts")},
        "champion": champion,
        "gated_against": champion.get("version") if champion["exists"] else None,
        "comparison": comparison_ground,
        "operating_points": thresholds,
        "shortcut_accepted": g.accept_shortcut_risk if shortcut and shortcut["passed"] else None,
        "bootstrap": {"resamples": boot.resamples, "seed": boot.seed, "level": boot.level, "unit": "patient"},
        "min_power": g.min_power,
        "intervals": {"level": boot.level, "unit": "patient (Kish effective count where patients have several "
                      "images)", "proportions": "Clopper-Pearson",
                      "paired proportions": "Tango score interval, counts divided by the patients' design effect",
                      "roc_auc": "Newcombe score interval; paired: MOVER with the DeLong correlation",
                      "macro_f1": "Dirichlet posterior; paired: MOVER"},
    }
    write_json(out_path, result)
    for c in checks:
        log.info("%s %s: %s", "pass" if c["passed"] else "FAIL", c["check"], c.get("value"))
    if summary:
        log.warning("%s", summary)
    if g.on_underpowered == "thresholds_only" and params.data.source != "demo":
        log.warning("gate.on_underpowered is thresholds_only with real data (data.source %s): a comparison with the "
                    "champion that cannot tell does not block; set it to fail (the default) for real data",
                    params.data.source)
    log.info("gate %s (%s) against %s (%d checks, %d failed)", "passed" if result["passed"] else "FAILED",
             result["decision"], f"champion v{champion['version']}" if champion["exists"] else "no champion",
             len(checks), len(result["failed"]))
    if strict and not result["passed"]:
        raise RefusedError(f"the gate failed ({'; '.join(result['failed'])}); see {out_path}")
    return result
