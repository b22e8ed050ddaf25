"""Gate: decide whether the candidate model may be registered.

Two kinds of checks, all written to ``gate.json`` with value, threshold and result
(:mod:`components.core.gating`):

* thresholds from ``params.yaml`` (``gate.min_accuracy``, ``gate.min_macro_f1``,
  ``gate.min_roc_auc``, ``gate.min_recall.<CLASS>``);
* no regression against the current ``champion``: the champion is **re-evaluated on the same
  test split** (not compared by stale logged numbers) and the candidate may not be worse by more
  than ``gate.max_regression`` on any gated metric.

A failed gate is a result, not a crash: the step exits 0 and ``passed`` is false (``--strict``:
exit 6). The result depends on the registry, so KFP never caches it and DVC re-runs it when the
registry's champion changes (``reports/registry_state.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from components.core.errors import RefusedError
from components.core.params_view import under_spec
from components.core.spec import Option, Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="gate",
    help="pass/fail the candidate on thresholds and against the re-evaluated champion",
    params=("data.classes", "validate.max_pixels", "gate", "registry", "mlflow"),
    inputs=(
        Port("metrics", "reports/metrics.json", "the candidate's test metrics", kind="file"),
        Port("shards", "data/shards", "the test split the champion is re-evaluated on"),
        Port("images", "data/raw", "image root (to decode the test split for a champion with another input size)"),
    ),
    outputs=(Port("out", "reports/gate.json", "the decision: every check with value, threshold, result",
                  kind="file", dvc=((".", "metric"),)),),
    kfp_views=(Port("decision", "", "passed (1/0) and the number of failed checks", artifact="Metrics"),),
    options=(Option("strict", bool, False, "exit 6 when the gate fails (for CI)"),),
    dvc_deps=("reports/registry_state.json",),
    cache=False,
    returns="passed",
    resources=("2", "4", "8G", "16G"),
    secrets=("mlflow",),
)


@under_spec(SPEC)
def run(params, metrics: str | Path, shards: str | Path, out: str | Path, images: str | Path | None = None,
        strict: bool = False) -> dict:
    """Gate the candidate (``metrics``) and write the decision to ``out``."""
    from components.core import tracking
    from components.core.fsutil import read_json, write_json
    from components.core.gating import champion_checks, gated_metrics, threshold_checks

    metrics_path, shards_dir, out_path, images_dir = metrics, shards, out, images
    candidate = read_json(metrics_path)
    tracking.setup(params)
    checks = threshold_checks(candidate, params)
    vs, champion = champion_checks(candidate, params, Path(shards_dir), Path(images_dir) if images_dir else None)
    checks += vs
    result = {
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "candidate": {"run_id": candidate.get("run_id"), "metrics": gated_metrics(candidate, params)},
        "champion": champion,
        "model_name": params.registry.model_name,
        "max_regression": params.gate.max_regression,
    }
    result["failed"] = [c["check"] for c in checks if not c["passed"]]
    write_json(out_path, result)
    for c in checks:
        log.info("%s %s: value %s", "pass" if c["passed"] else "FAIL", c["check"], c["value"])
    log.info("gate %s (%d checks, %d failed)", "passed" if result["passed"] else "FAILED", len(checks),
             len(result["failed"]))
    if strict and not result["passed"]:
        raise RefusedError(f"the gate failed ({'; '.join(result['failed'])}); see {out_path}")
    return result
