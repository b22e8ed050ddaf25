"""The model card, organised along the CLAIM checklist items that apply to a retrospective
classification model (Mongan et al. 2020, "Checklist for Artificial Intelligence in Medical
Imaging"): intended use, data and their licences, inclusion/exclusion, de-identification, reference
standard, partitioning, model and training, results with patient-level CIs per set and per source,
operating points, calibration, failure analysis, the source-bias audit, what the model looks at (the
shortcut stress tests of evaluate) and limitations.
Rendered as Markdown (registry description, `GET /model`) and HTML."""

from __future__ import annotations

from typing import Any


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


def _ci(entry: dict | None, fmt=_pct) -> str:
    return "" if not entry else f" ({fmt(entry['low'])}–{fmt(entry['high'])})"


def _ece_reference(entry: dict | None) -> str:
    """ECE's reference (a calibrated model's ECE on as many images), or the interval of older metrics."""
    if not entry:
        return ""
    ref = entry.get("calibrated_reference")
    if ref:
        return f" (a calibrated model: ≈{_num(ref['median'])}, ≤ {_num(ref['high'])} in {int(100 * ref['level'])}%)"
    return _ci(entry, _num) if "low" in entry else ""


def _results(m: dict, title: str, chosen: dict | None = None) -> list[str]:
    ci = m.get("ci") or {}
    pc_ci = ci.get("per_class") or {}
    lines = [f"### {title} — {m.get('n')} images" + (f", {ci['patients']} patients" if ci else ""), "",
             f"accuracy {_pct(m.get('accuracy'))}{_ci(ci.get('accuracy'))} · macro F1 {_num(m.get('macro_f1'))}"
             f"{_ci(ci.get('macro_f1'), _num)} · macro ROC-AUC {_num(m.get('macro_roc_auc'))}"
             f"{_ci(ci.get('macro_roc_auc'), _num)} · ECE {_num(m.get('ece'))}{_ece_reference(ci.get('ece'))}", "",
             "| class | sensitivity | specificity | precision | F1 | ROC-AUC | images | patients (with / without) |",
             "|---|---|---|---|---|---|---|---|"]
    for c, v in (m.get("per_class") or {}).items():
        cc = pc_ci.get(c) or {}
        lines.append(f"| {c} | {_pct(v['recall'])}{_ci(cc.get('sensitivity'))} | {_pct(v['specificity'])}"
                     f"{_ci(cc.get('specificity'))} | {_pct(v['precision'])} | {_num(v['f1'])} | {_num(v['roc_auc'])}"
                     f"{_ci(cc.get('roc_auc'), _num)} | {v['support']} | {v.get('positive_patients', '?')} / "
                     f"{v.get('negative_patients', '?')} |")
    if ci:
        lines += ["", f"In brackets: {int(100 * ci['level'])}% intervals on **patients** (a patient's images are one "
                      "piece of evidence): Clopper-Pearson for sensitivity, specificity and accuracy, Newcombe's score "
                      "interval for ROC-AUC, a Dirichlet posterior for macro F1. ECE has no interval: it is biased "
                      "upward on few images, so it is shown next to what a perfectly calibrated model with the same "
                      "confidences would show on as many images. A sensitivity rests on the patients *with* the "
                      "class, a specificity on those without it."]
    for src, sm in (m.get("per_source") or {}).items():
        lines.append(f"- source `{src}`: {sm.get('n')} images, accuracy {_pct(sm.get('accuracy'))}, "
                     f"macro ROC-AUC {_num(sm.get('macro_roc_auc'))}")
    ops = m.get("operating_points") or {}
    if ops:
        chosen = chosen or {}
        lines += ["", "| operating point | threshold | sensitivity | specificity | PPV | NPV | promised (val) |",
                  "|---|---|---|---|---|---|---|"]
        for c, o in ops.items():
            promise = chosen.get(c) or {}
            promised = "—"
            if promise.get("expected_sensitivity") is not None:
                promised = (f"{_pct(promise['expected_sensitivity'])} expected, ≥ "
                            f"{_pct(promise['sensitivity_lower_bound'])} "
                            f"({int(100 * promise.get('lower_bound_level', 0.95))}%) from "
                            f"{promise['positive_patients']} patients")
            sens_ci = f" ({_pct(o['sensitivity_ci'][0])}–{_pct(o['sensitivity_ci'][1])})" if o.get("sensitivity_ci") \
                else ""
            lines.append(f"| {c} (target sens. {_pct(o['target_sensitivity'])}) | {o['threshold']:.4f} | "
                         f"{_pct(o['sensitivity'])}{sens_ci} | {_pct(o['specificity'])} | {_pct(o['ppv'])} | "
                         f"{_pct(o['npv'])} | {promised} |")
    lines.append("")
    return lines


def how_sure(level: float = 0.95, min_power: float = 0.95) -> list[str]:
    """The "How sure are these numbers" section: what n gives what interval, and what the gate needs
    (``min_power``: the gate's ``gate.min_power``, the power it plans for)."""
    from components.core.stats import intervals

    rows = []
    for n in (10, 20, 50, 100, 400):
        lo, hi = intervals.clopper_pearson(round(0.9 * n), n, level)
        lo1, _ = intervals.clopper_pearson(n, n, level)
        a_lo, a_hi = intervals.auc_interval(0.9, n, n, level)
        t_lo, _ = intervals.tango_interval(0, 0, n, level)
        rows.append(f"| {n} | {_pct(lo)}–{_pct(hi)} | {_pct(lo1)}–100% | {_num(a_lo)}–{_num(a_hi)} | "
                    f"{100 * float(t_lo):.1f} points |")
    want = min_power
    need = {m: intervals.patients_for_power(lambda n, m=m: intervals.tango_power(n, 0.05, m, level), 8, want)
            for m in (0.02, 0.05)}
    return ["## How sure are these numbers", "",
            f"Every interval here is a {int(100 * level)}% interval on patients. What the number of patients buys:",
            "", "| patients | sensitivity 90% | sensitivity 100% | ROC-AUC 0.90 (n with, n without) | "
                "two models that agree on every patient: lower bound of the difference |",
            "|---|---|---|---|---|", *rows, "",
            "A class's sensitivity rests on the patients **with** it: 8 COVID-19 patients all found still leaves the "
            "true sensitivity anywhere above 63%. The gate compares a candidate with the champion on the test "
            "patients new to both: a check passes when the lower bound of (candidate - champion) is above -margin, "
            "and fails when the whole interval is below 0. For two equally good models that disagree on 5% of "
            f"patients, {want:.0%} power (`gate.min_power`) for the accuracy check alone needs about "
            f"{need[0.02]:,} patients at a margin "
            f"of 0.02 and {need[0.05]:,} at 0.05 (per check; all checks together need more). With fewer, an interval "
            "that contains 0 but reaches below -margin is *inconclusive* and the gate says how many patients it "
            "would take (`gate.on_underpowered` decides whether that blocks), instead of calling the candidate "
            "worse.", ""]


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3f}"
    if isinstance(x, list | tuple) and len(x) == 2 and all(isinstance(v, int | float) for v in x):
        return f"[{x[0]:.3f}, {x[1]:.3f}]"
    return "—" if x is None else str(x)


def gate_section(gate: dict) -> list[str]:
    """The gate's decision as a table: every check with its value, CI, threshold or margin, patients, power."""
    champ = gate.get("champion") or {}
    ground = gate.get("comparison") or {}
    decision = gate.get("decision") or ("passed" if gate.get("passed") else "failed")
    lines = ["## Gate", f"**{'passed' if gate.get('passed') else 'FAILED'}** ({decision}) — against "
             + (f"champion v{champ.get('version')}" if champ.get("exists") else "no champion (absolute thresholds)"),
             ""]
    if ground.get("status") in ("compared", "incomparable"):
        excluded = ground.get("excluded") or {}
        seen = excluded.get("champion_trained_or_validated", 0) + excluded.get("champion_saw_an_image", 0)
        lines.append(f"Comparison ground: {ground.get('patients_used')} of {ground.get('patients_total', '?')} test "
                     f"patients new to both models ({seen} left out: the champion trained or validated on them, by "
                     f"patient or by image content); {ground['status']}"
                     + (f": {ground['reason']}" if ground.get("reason") else "") + ".")
        lines.append("")
    if gate.get("summary"):
        lines += [f"**{gate['summary']}**", ""]
    lines += ["| | check | value | 95% CI | threshold / margin | patients | power |", "|---|---|---|---|---|---|---|"]
    for c in gate.get("checks", []):
        mark = {"inconclusive": "?", "failed": "✘", "passed": "✔"}.get(c.get("status"), "✔" if c["passed"] else "✘")
        if c.get("superior"):
            mark += " (superior)"
        bound = c.get("threshold") if "threshold" in c else (f"-{c['margin']}" if "margin" in c else "")
        count = c.get("count", "patients")
        patients = f"{_fmt(c.get('patients'))}" + (f" {count.split()[0]}" if count != "patients" else "")
        power = "" if c.get("power") is None else f"{c['power']:.2f}" + (
            f" (≈{c['patients_needed']:,}" + (f", {rng[0]:,}–{rng[1]:,}" if (rng := c.get("patients_needed_range"))
                                            and all(rng) else "") + " patients)" if c.get("patients_needed") else "")
        lines.append(f"| {mark} | {c['check']} | {_fmt(c.get('value'))} | {_fmt(c.get('ci'))} | {_fmt(bound)} | "
                     f"{patients} | {power} |")
    ops = gate.get("operating_points") or {}
    if ops:
        lines += ["", "Operating points (chosen on the validation split; reported, not gated): " + ", ".join(
            f"{c} ≥ {v['threshold']:.4f}"
            + (f" promises {_pct(v['expected_sensitivity'])} sensitivity (≥ {_pct(v['sensitivity_lower_bound'])})"
               if v.get("expected_sensitivity") is not None else "")
            + (f", threshold range over validation patients {_fmt(v.get('ci'))}" if v.get("ci") else "")
            for c, v in ops.items())]
    if gate.get("shortcut_accepted"):
        lines += ["", f"**Shortcut risk accepted:** {gate['shortcut_accepted']}"]
    if gate.get("intervals") or gate.get("bootstrap"):
        min_power = gate.get("min_power", ground.get("min_power"))
        joint = ground.get("joint_power")
        lines += ["", "Intervals on patients: Clopper-Pearson for one model's rates, Tango's score interval for the "
                  "paired difference of two (the same patients), Newcombe/MOVER for ROC-AUC. A comparison check fails "
                  "when its whole interval is below 0; one whose interval contains 0 but reaches below -margin is "
                  "*inconclusive* (?) while all checks together have less than "
                  + (f"{min_power:.0%}" if min_power is not None else "`gate.min_power`")
                  + " power to pass for two equal models (`gate.min_power`), and fails above it"
                  + (f" (here: {joint:.0%})" if joint is not None else "") + ". The power column is each check's own; "
                  "the patients in brackets would give every check its share of that power (the range: the "
                  "discordance of two equal models at the bounds of its interval)."]
    return lines


_PHI_POLICY = {
    "report": "`report` — identifying attributes are counted here and the files are kept",
    "quarantine": "`quarantine` — every DICOM file with an identifying attribute or burned-in text (header flag) "
                  "was refused by validation",
}


def _deidentification(audit: dict | None) -> list[str]:
    """The "De-identification" section, from the validation summary's ``deidentification`` block."""
    lines = ["## De-identification"]
    if not audit:
        lines += ["Not audited: the validation summary has no `deidentification` block (validated by an older "
                  "version of the pipeline).", ""]
        return lines
    n = int(audit.get("dicom_files") or 0)
    policy = audit.get("policy", "report")
    lines.append(f"- policy (`validate.phi`): {_PHI_POLICY.get(policy, f'`{policy}`')}")
    if not n:
        lines += ["- DICOM files: 0 — the images are pixel formats (JPEG, PNG, …) without headers, so there is no "
                  "header to audit. Public sets are released de-identified by their providers.",
                  "- text burned into the pixels is not checked.", ""]
        return lines
    names = audit.get("identifying_attributes") or {}
    with_phi = int(audit.get("files_with_identifying_attributes") or 0)
    lines += [
        f"- DICOM files: {n}",
        f"- files with identifying attributes (DICOM PS3.15 basic profile): {with_phi} of {n}"
        + (": " + ", ".join(f"`{k}` ({v})" for k, v in names.items()) if names else ""),
        f"- BurnedInAnnotation = YES: {int(audit.get('burned_in_annotation_yes') or 0)} files (the header flag; "
        "text burned into the pixels without the flag is not detected)",
        f"- files with private tags: {int(audit.get('files_with_private_tags') or 0)}",
        "- only attribute names and counts are recorded, never values. A DICOM PatientID names the patient "
        "(for splitting) as a digest only; raw ids stay in the files, inside the DVC-tracked data folder.",
    ]
    if with_phi and policy == "report":
        lines.append("- the attributes above are still in the files: public sets often keep a pseudonymous "
                     "PatientID and PatientName; for hospital exports, de-identify them before training or set "
                     "`validate.phi: quarantine`.")
    lines.append("")
    return lines


_TEST_NAMES = {
    "centre_masked": "central field blanked: model's balanced accuracy",
    "lung_masked": "lung field blanked (older metrics): model's balanced accuracy",
    "border_probe": "border-only classifier: balanced accuracy",
    "attention_outside": "Grad-CAM heat outside the central field, excess over the area share",
    "source_probe": "source from the model's features, within a class: balanced accuracy",
}


def _shortcut(block: dict | None) -> list[str]:
    """The "What the model looks at" section: the shortcut stress tests in plain words, then the figures."""
    if not block:
        return ["not run (these metrics predate the shortcut stress tests)", ""]
    lines = [block.get("summary", ""), ""]
    if not block.get("enabled"):
        return lines
    lines += ["| set | test | value | chance | flagged from | p | result |", "|---|---|---|---|---|---|---|"]

    def row(where: str, test: str, r: dict) -> str:
        if "value" not in r:
            return f"| {where} | {_TEST_NAMES[test]} | not run: {r.get('not_run', 'n/a')} | | | | |"
        extra = f" ({r['class']})" if r.get("class") else ""
        p = "" if r.get("p_value") is None else f"{r['p_value']:.3g}"
        return (f"| {where} | {_TEST_NAMES[test]}{extra} | {_num(r['value'])} | {_num(r['chance'])} | "
                f"{_num(r['threshold'])} | {p} | "
                f"{'**shortcut**' if r.get('flagged') else 'ok'} |")

    for name, res in (block.get("sets") or {}).items():
        where = "test" if name == "test" else f"external `{name}`"
        first = "centre_masked" if "centre_masked" in res else "lung_masked"
        lines += [row(where, t, res.get(t) or {}) for t in (first, "border_probe", "attention_outside")]
    lines.append(row("test + external", "source_probe", block.get("source_probe") or {}))
    lines.append("")
    for name, res in (block.get("sets") or {}).items():
        per_class = (res.get("attention_outside") or {}).get("per_class") or {}
        shares = ", ".join(f"{c} {_pct(v['share_outside'])} (area {_pct(v['area_outside'])})"
                           for c, v in per_class.items() if v.get("share_outside") is not None)
        if shares:
            lines.append(f"- Grad-CAM heat of the true class outside the central field, {name}: {shares}")
    field = block.get("central_field") or {}
    lines += [
        f"- Central field: rows {_pct(field.get('top'))}–{_pct(field.get('bottom'))} and columns "
        f"{_pct(field.get('left'))}–{_pct(field.get('right'))} of the part of each film the model sees (its box, "
        "inside its letterbox or cropped to the square): the same share in every resize mode. It is a rectangle, "
        "not a lung mask: it holds the mediastinum and anything lying over the "
        "chest (tubes, lines, leads), so these tests cannot tell the lungs from devices. Blanked with the mean grey "
        "of the rest of the film; the border probe reads the "
        f"outer {_pct(block.get('frame'))} of each side outside that field, cross-validated by patient. A test "
        f"flags at chance + margin when its p-value against chance (by patient) is ≤ {block.get('alpha')}. The "
        "source probe blocks only where the sources it tells apart go with the label in the training data.",
        "- The Grad-CAM gallery (`reports/eval/plots/gradcam.png`) shows, per class, correct and wrong cases with "
        "the central field outlined.", ""]
    return lines


def render(*, name: str, metrics: dict, train: dict, params: dict, validation: dict | None = None,
           split: dict | None = None, gate: dict | None = None, external: dict | None = None,
           version: str | None = None, ingest: dict | None = None) -> str:
    classes = metrics.get("classes") or list(metrics.get("per_class", {}))
    t, data = params.get("train", {}), params.get("data", {})
    validation, split, external = validation or {}, split or {}, external or {}
    cal = metrics.get("calibration") or train.get("calibration") or {}
    lines = [
        f"# Model card: {name}" + (f" v{version}" if version else ""), "",
        "## Intended use",
        f"Research and engineering: classify frontal chest radiographs as {', '.join(classes)}, to study data "
        "quality, pipelines and model behaviour. **Not a medical device.** Not validated for diagnosis, "
        "screening or triage; predictions must not replace a radiologist's reading.", "",
        "## Data",
        f"- source: `{data.get('source')}` {data.get('path') or ''}"
        + (f" (`{data.get('kaggle_dataset')}`)" if data.get("source") == "kaggle" else ""),
    ]
    for src, info in (validation.get("sources") or {}).items():
        lines.append(f"- `{src or 'unspecified'}`: {info.get('images')} images"
                     + (f", licence {info['license']}" if info.get("license") else ", licence: see the source"))
    skipped = (ingest or {}).get("skipped") or {}
    if ingest:
        lines.append(f"- ingest: {ingest.get('images')} images taken; {skipped.get('count', 0)} files or rows skipped"
                     + (f" ({skipped.get('by_reason')})" if skipped.get("count") else "")
                     + " — every one is listed with its reason in `reports/ingest/skipped.csv`")
    lines += _label_decisions((ingest or {}).get("label_overrides"))
    lines += [
        f"- inclusion: every readable JPEG/PNG/BMP/TIFF image whose label maps to {classes}; "
        f"excluded labels: {data.get('exclude_labels') or 'none'}",
        f"- exclusion: {validation.get('quarantined', 'n/a')} of {validation.get('images', 'n/a')} images quarantined "
        f"by validation ({validation.get('quarantine_reasons') or 'none'}): undecodable, out-of-range size, "
        "duplicates (same sha256) or label conflicts", "",
        *_deidentification(validation.get("deidentification")),
        "## Reference standard",
        "Labels are those of the source data sets (folder names or manifest labels, normalised by an alias "
        "table), except where a confirmed line of the label decisions above relabelled or excluded an image "
        "(each with who and why); the others were not re-read for this model. For Kermany et al. (2018) they "
        "come from expert graders; for COVID-19 collections, from the contributing hospital.", "",
        "## Partitioning and class balance",
        "Train, validation and test splits are made **by patient** (no patient in two splits), stratified by "
        "label; the test split and external sets are never used for training, model selection, calibration or "
        "thresholds.",
    ]
    for split_name, s in (split.get("splits") or {}).items():
        lines.append(f"- {split_name}: {s['images']} images, {s['patients']} patients, per class {s['per_class']}")
    lines += ["", "## Model and training",
              f"- backbone `{t.get('backbone')}`, weights `{t.get('weights')}`, input {t.get('image_size')} px "
              "grayscale uint8; the backbone's preprocessing is inside the model",
              f"- phases {t.get('phases')}; class weights `{t.get('class_weight')}`; augmentation {t.get('augment')}",
              f"- best epoch {train.get('best_epoch')} of {train.get('epochs_run')} by `{train.get('monitor')}`; "
              f"data version `{train.get('data_version')}`",
              f"- calibration: temperature {cal.get('temperature', 1.0)} fitted on the validation split; test ECE "
              f"{_num(cal.get('test_ece_before'))} before, {_num(cal.get('test_ece_after'))} after", ""]
    thresholds = (metrics.get("thresholds") or {}).get("val") or {}
    if thresholds:
        lines += ["Decision thresholds, chosen on the validation split for a target sensitivity (the "
                  "ceil(target x (n + 1))-th highest score of its n positive patients, so that a new patient is "
                  "caught with approximately at least the target probability: the same split also chose the epoch "
                  "and the temperature, so the conformal promise is not exact): "
                  + ", ".join(f"{c} ≥ {v['threshold']:.4f} (target {_pct(v['target_sensitivity'])}"
                              + (f", {v['positive_patients']} validation patients" if v.get("positive_patients")
                                 else "") + ")" for c, v in thresholds.items()), ""]
    lines += ["## Results", "", *_results(metrics, "Internal test split", thresholds)]
    for ext_name, m in (metrics.get("external") or {}).items():
        info = (external.get("sets") or {}).get(ext_name, {})
        title = f"External set `{ext_name}`" + (f" ({info.get('source')})" if info else "")
        lines += _results(m, title, thresholds)
        if info.get("removed_as_in_main_data"):
            lines.append(f"{info['removed_as_in_main_data']} images also in the main data were removed from it.")
    lines += _ood_section(metrics.get("ood") or {})
    losses = metrics.get("top_losses") or []
    lines += ["## Failure analysis", "The test images the model is most wrong about (image reference → its file: "
              "`grep <hex> data/validated/manifest.csv`; label → prediction, "
              "probability of the true label); look at them before trusting the numbers:", ""]
    lines += [f"- `{x.get('image', x.get('path'))}`: {x['label']} → {x['predicted']} (p={x['p_label']:.2f})"
              for x in losses[:8]] or [
        "- none"]
    audit = validation.get("source_bias_audit") or {}
    lines += ["", "## Source-bias audit"]
    if audit.get("balanced_accuracy") is not None:
        lines += ["A classifier that sees only file metadata reaches balanced accuracy "
                  f"{audit['balanced_accuracy']:.2f} (chance {audit['chance_balanced_accuracy']:.2f}).",
                  audit.get("warning") or audit.get("note", "")]
    else:
        lines.append("not run")
    lines += ["", "## What the model looks at", *_shortcut(metrics.get("shortcut"))]
    if gate:
        lines += ["", *gate_section(gate)]
    min_power = (gate or {}).get("min_power") or (params.get("gate") or {}).get("min_power") or 0.95
    lines += ["", *how_sure(((metrics.get("ci") or {}).get("level")) or 0.95, float(min_power))]
    lines += ["", "## Limitations",
              "- Performance on one data set does not transfer to other hospitals, scanners, age groups or "
              "protocols: check the external sets and the per-source rows above.",
              "- Labels are the sources' and unverified here; small test sets give wide CIs.",
              "- Grad-CAM maps show where the model looked, not why; they do not localise disease.", ""]
    if metrics.get("notes"):
        lines += ["Notes: " + "; ".join(metrics["notes"]), ""]
    return "\n".join(lines)


def _label_decisions(ov: dict | None) -> list[str]:
    """Issue 24: the label decisions ingest applied (data/label_overrides.csv), with counts."""
    if not ov:
        return ["- label decisions: none applied (no label overrides file)"]
    moved = ", ".join(f"{k}: {v}" for k, v in sorted((ov.get("relabelled_by_class") or {}).items()))
    line = (f"- label decisions (`{ov.get('file')}`, {ov.get('lines', 0)} lines): {ov.get('relabelled', 0)} images "
            f"relabelled{f' ({moved})' if moved else ''} and {ov.get('excluded', 0)} excluded by confirmed lines; "
            f"{ov.get('proposed_pending', 0)} proposals await a person's confirmation (not applied)")
    if ov.get("unmatched"):
        where = [str(u["line"]) for u in ov.get("unmatched_lines") or [] if u.get("line")]
        line += f"; {ov['unmatched']} confirmed lines matched no image" + (
            f" (line {', '.join(where[:10])}{' …' if len(where) > 10 else ''})" if where else "")
    return [line]


def _ood_section(ood: dict) -> list[str]:
    """Issue 16: the out-of-distribution warning and how well it separates each external set."""
    if not ood.get("available"):
        return []
    test = ood.get("test") or {}
    lines = ["## Out-of-distribution warning",
             f"Every prediction carries an OOD score ({ood.get('method')}) and is flagged `unlike_training_data` "
             f"above {_num(ood.get('threshold'))}, chosen on the validation split for a false-alarm rate of "
             f"{_pct(ood.get('false_alarm'))}; on the internal test split {_pct(test.get('flag_rate'))} of "
             f"{test.get('n')} images were flagged."]
    for name, ext in (ood.get("external") or {}).items():
        lines.append(f"- external set `{name}`: {_pct(ext.get('flag_rate'))} of {ext.get('n')} images flagged; "
                     f"AUROC of the score against the internal test split {_num(ext.get('auroc_vs_test'))}")
    return [*lines, ""]


def to_html(markdown: str, title: str) -> str:
    import html

    import mistune

    body = mistune.html(markdown)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}</style></head>"
            f"<body>{body}</body></html>\n")
