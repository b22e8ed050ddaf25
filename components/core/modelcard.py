"""The model card: what the model is for, what it was trained and tested on, how well it does per
class and per source, what the data audit found, and what it must not be used for."""

from __future__ import annotations

from typing import Any


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


def _metrics_table(m: dict) -> list[str]:
    lines = ["| class | precision | recall (sensitivity) | specificity | F1 | ROC-AUC | support |",
             "|---|---|---|---|---|---|---|"]
    for c, v in m.get("per_class", {}).items():
        lines.append(f"| {c} | {_pct(v['precision'])} | {_pct(v['recall'])} | {_pct(v['specificity'])} | "
                     f"{_num(v['f1'])} | {_num(v['roc_auc'])} | {v['support']} |")
    return lines


def render(*, name: str, metrics: dict, train: dict, params: dict, validation: dict | None = None,
           split: dict | None = None, gate: dict | None = None, version: str | None = None) -> str:
    classes = metrics.get("classes") or list(metrics.get("per_class", {}))
    t = params.get("train", {})
    lines = [
        f"# Model card: {name}" + (f" v{version}" if version else ""),
        "",
        "## Intended use",
        f"Research and engineering use: classify frontal chest radiographs as {', '.join(classes)}, to study "
        "pipelines, data quality and model behaviour. **Not a medical device.** Not validated for clinical "
        "decisions, screening or triage; predictions must not replace a radiologist's reading.",
        "",
        "## Model",
        f"- backbone: `{t.get('backbone')}`, weights `{t.get('weights')}`, input {t.get('image_size')} px grayscale "
        "(uint8; the backbone's own preprocessing is inside the model)",
        f"- training phases: {t.get('phases')}",
        f"- best epoch: {train.get('best_epoch')} of {train.get('epochs_run')} (by `{train.get('monitor')}`), "
        f"class weights `{t.get('class_weight')}`",
        f"- data version: `{train.get('data_version')}`",
        "",
        "## Data",
        f"- source: `{params.get('data', {}).get('source')}` "
        f"{params.get('data', {}).get('path') or params.get('data', {}).get('kaggle_dataset') or ''}",
    ]
    if validation:
        lines += [f"- images: {validation.get('images')} ingested, {validation.get('usable')} usable, "
                  f"{validation.get('quarantined')} quarantined ({validation.get('quarantine_reasons') or 'none'})",
                  f"- patients: {validation.get('patients')}"]
    if split:
        for name_, s in split.get("splits", {}).items():
            lines.append(f"- {name_}: {s['images']} images, {s['patients']} patients, per class {s['per_class']}")
        lines.append("- splits are by patient: no patient appears in two splits")
    lines += ["", f"## Test results ({metrics.get('n')} images, never used for training or model selection)", "",
              f"accuracy {_pct(metrics.get('accuracy'))}, macro F1 {_num(metrics.get('macro_f1'))}, macro ROC-AUC "
              f"{_num(metrics.get('macro_roc_auc'))}, ECE {_num(metrics.get('ece'))}", ""]
    lines += _metrics_table(metrics)
    for src, m in (metrics.get("per_source") or {}).items():
        lines += ["", f"### Source `{src}` ({m.get('n')} images): accuracy {_pct(m.get('accuracy'))}", ""]
        lines += _metrics_table(m)
    audit = (validation or {}).get("source_bias_audit") or {}
    lines += ["", "## Source-bias audit"]
    if audit.get("balanced_accuracy") is not None:
        lines.append(f"A classifier that sees only file metadata reaches balanced accuracy "
                     f"{audit['balanced_accuracy']:.2f} (chance {audit['chance_balanced_accuracy']:.2f}).")
        lines.append(audit.get("warning") or audit.get("note", ""))
    else:
        lines.append("not run")
    if gate:
        lines += ["", "## Gate", f"passed: **{gate.get('passed')}**", ""]
        lines += [f"- {'✔' if c['passed'] else '✘'} {c['check']}: {c['value']}" for c in gate.get("checks", [])]
    lines += ["", "## Limitations",
              "- Accuracy on one data set does not transfer to other hospitals, scanners or populations; "
              "evaluate on external data before any use.",
              "- Labels come from the source data sets and are not verified by us.",
              "- Grad-CAM maps show where the model looked, not why; they are not a localisation of disease.", ""]
    if metrics.get("notes"):
        lines += ["Notes: " + "; ".join(metrics["notes"]), ""]
    return "\n".join(lines)
