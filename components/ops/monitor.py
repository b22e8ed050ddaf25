"""Monitor: a window of the prediction log against the reference saved at training time.

Reads the last ``monitor.window_hours`` of the log ``cxr serve`` writes (``--log``, the folder of
``CXR_PREDICTION_LOG``), keeps the predictions of the reference model's version, and runs the checks of
:mod:`components.core.stats.drift` against the model's :class:`~components.core.model.ood.OodReference`: OOD rate,
predicted-class drift, image-statistics drift, and live accuracy/sensitivity where ``POST /feedback``
labelled predictions. Writes ``summary.json`` and ``report.html`` to ``--out``.

When retraining is due (a check in ``monitor.retrain_on`` is significant) and the caller passes
``trigger`` (``cxr monitor --kfp-host``, or the ``cxr-monitor`` KFP pipeline), it is called with the
summary and its result (the submitted training run) goes into the summary; otherwise the summary says
that retraining is due. Not a DVC stage nor a task of the training pipeline: it reads state outside
the repository (the log, the registry) and runs on a schedule (``cxr pipeline schedule --monitor``).
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from pathlib import Path

from components.core.contract.errors import CxrError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

logger = logging.getLogger(__name__)

SPEC = StepSpec(
    name="monitor",
    help="compare a window of the prediction log with the training reference: OOD rate, drift, live accuracy",
    params=("monitor", "registry.model_name", "mlflow"),
    inputs=(Port("log", ".cxr/predictions", "the prediction log folder (CXR_PREDICTION_LOG of `cxr serve`)"),),
    outputs=(Port("out", "reports/monitor", "summary.json and report.html"),),
    options=(
        Option("model", str, "", "the reference model: models:/<name>@<alias>, models:/<name>/<N>, runs:/… or a "
               "model folder (default: models:/<registry.model_name>@champion)"),
        Option("now", float, 0.0, "end of the window as a Unix time (default: now)"),
    ),
    cache=False,
    dvc=False,
)


@under_spec(SPEC)
def run(params, log: str | Path, out: str | Path, model: str = "", now: float = 0.0,
        trigger: Callable[[dict], dict] | None = None) -> dict:
    """Assess the window ending at ``now``; call ``trigger(summary)`` when retraining is due."""
    from components.core.contract.fsutil import atomic_path, write_json, write_text
    from components.core.registry import registry, tracking
    from components.core.stats import drift

    cfg = params.monitor
    uri = model or f"models:/{params.registry.model_name}@{registry.CHAMPION}"
    if uri.startswith(("models:/", "runs:/")):
        tracking.setup(params)
    reference, info = registry.reference_for(uri)
    if reference is None:
        raise CxrError(f"{uri} has no OOD/drift reference (ood_reference.npz): retrain it with this version "
                       "of `cxr train`, or pass --model with one that has")
    end = now or time.time()
    start = end - cfg.window_hours * 3600
    window = drift.read_log(log, start, end, info["version"] or None)
    summary = drift.assess(window, reference, cfg)
    summary.update({"model": info, "window": {"start": _utc(start), "end": _utc(end), "hours": cfg.window_hours},
                    "log": {"folder": str(log), "files": len(window.files)},
                    "reference": {**reference.describe(), "expected_class_share": reference.expected_class_share()},
                    "thresholds": cfg.model_dump(mode="json")})
    summary["retraining"] = {"due": summary["verdict"] == drift.VERDICT_DUE, "submitted": False}
    if summary["retraining"]["due"]:
        if trigger is None:
            summary["retraining"]["note"] = "retraining is due: no KFP host given, nothing submitted"
        else:
            summary["retraining"].update(trigger(summary) or {}, submitted=True)
    with atomic_path(out, directory=True) as tmp:
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "report.html", _html(summary, window, reference))
    logger.info("monitor %s: %s (%d predictions, %d with feedback)%s", uri, summary["verdict"], window.n,
             window.feedback, "; " + "; ".join(summary["reasons"]) if summary["reasons"] else "")
    return summary


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _figure(window, reference) -> str:
    """OOD scores of the window vs the validation split, as an inline PNG (base64)."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scores = np.array([r["ood_score"] for r in window.records if isinstance(r.get("ood_score"), int | float)])
    if not len(scores):
        return ""
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.linspace(0, max(scores.max(), reference.val_scores.max(), reference.threshold) * 1.05, 40)
    ax.hist(reference.val_scores, bins=bins, density=True, alpha=0.5, label="validation split")
    ax.hist(scores, bins=bins, density=True, alpha=0.5, label="this window")
    ax.axvline(reference.threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel="OOD score (Mahalanobis distance)", ylabel="density")
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _html(summary: dict, window, reference) -> str:
    e = html.escape
    verdict = summary["verdict"]
    colour = {"retraining_due": "#b00020", "ok": "#2e6b30"}.get(verdict, "#666")
    rows = []
    for name, check in summary["checks"].items():
        if name == "image_drift":
            for key, t in check.items():
                rows.append((f"image {key}", f"KS D={t['ks']} (median {t['window_median']} vs {t['reference_median']})",
                             t["p_value"]))
        elif name == "live_accuracy":
            rows.append(("live accuracy", f"{check.get('accuracy')} on {check['n']} labelled "
                                          f"(CI {check.get('accuracy_ci')})", None))
        elif name == "ood_rate":
            rows.append(("OOD rate", f"{check.get('rate')} of {check.get('n')} (expected {check['expected']}, "
                                     f"limit {check['limit']})", check.get("p_value")))
        else:
            rows.append(("predicted classes", f"TV={check.get('effect')} observed {check.get('observed')} expected "
                                              f"{check.get('expected')}", check.get("p_value")))
    table = "".join(f"<tr><td>{e(a)}</td><td>{e(str(b))}</td><td>{e(str(c))}</td></tr>" for a, b, c in rows)
    reasons = "".join(f"<li>{e(r)}</li>" for r in summary["reasons"]) or "<li>none</li>"
    noted = "".join(f"<li>{e(r)}</li>" for r in summary.get("noted", []))
    fig = _figure(window, reference)
    img = f"<img alt='OOD scores' src='data:image/png;base64,{fig}'>" if fig else ""
    m, w, r = summary["model"], summary["window"], summary["retraining"]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cxr monitor</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}</style></head><body>"
            f"<h1>Prediction monitor</h1><p>model {e(m['uri'])} v{e(m['version'] or '?')} · window {e(w['start'])} → "
            f"{e(w['end'])} · {summary['predictions']} predictions ({summary['other_versions']} of other versions, "
            f"{summary['feedback']} with feedback)</p>"
            f"<p style='font-size:1.3rem;color:{colour}'><strong>{e(verdict.replace('_', ' '))}</strong>"
            f"{' · training run submitted: ' + e(str(r.get('run_id'))) if r.get('submitted') else ''}</p>"
            f"<p>{e(summary.get('note', ''))}</p><h2>Why</h2><ul>{reasons}</ul>"
            + (f"<h2>Also significant (not in monitor.retrain_on)</h2><ul>{noted}</ul>" if noted else "")
            + f"<h2>Checks</h2><p>family-wise level {summary.get('alpha')} over {summary.get('tests')} tests "
            f"(Bonferroni: {summary.get('alpha_per_test')} each)</p>"
            f"<table><tr><th>check</th><th>window vs reference</th><th>p-value</th></tr>{table}</table>{img}"
            f"<p><small>Reference: {e(reference.method)}, threshold {reference.threshold:.4g} for a false-alarm rate "
            f"of {reference.false_alarm:.0%}, {reference.n_train} training images.</small></p></body></html>\n")
