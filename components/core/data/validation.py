"""Validation shared by the validate step and the external test sets: image facts in parallel, a
Great Expectations suite over the manifest, quarantine, and the source-bias audit.

Every row-level expectation that fails marks rows for quarantine (with the expectation and its
detail as the reason, with its numbers); expectations listed in ``validate.critical`` fail the step. An
expectation that could not run (it raised) fails the step whatever ``validate.critical`` says: GX reports it
as failed with no unexpected rows, which would otherwise quarantine nothing. ``blank_film`` quarantines films
whose pixels' standard deviation is under ``validate.min_pixel_std``.
``multi_frame`` (a file with several frames, frame 0 used) is a warning in the manifest's ``warnings``
column: it quarantines nothing, and fails the step when it is critical. Outputs: the
validated manifest (usable rows), ``quarantine.csv``, ``summary.json`` and GX Data Docs HTML.
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.data import manifest
from components.core.data.bias import source_bias_audit
from components.core.contract.errors import DataError
from components.core.contract.fsutil import atomic_path, write_json
from components.core.data.images import ImageFacts, Limits, blank_detail, inspect_file, transparency_detail
from components.core.contract.progress import progress

log = logging.getLogger(__name__)

# Row-level expectations in the order their failure names the quarantine reason.
ROW_EXPECTATIONS = ("decodable", "dimensions_in_range", "transparent_pixels", "blank_film", "label_in_classes",
                    "unique_sha256", "deidentified")


def compute_facts(raw_dir: str | Path, df: pd.DataFrame, max_pixels: int, workers: int) -> pd.DataFrame:
    """Read every file of ``df`` once (sha256, header, decode check) in ``workers`` processes: the rows with
    their facts. Row by row, so any run of rows (a partition) gives the same facts as the whole manifest.
    The raw DICOM PatientID is dropped here (only its digest travels)."""
    from components.core.data import storage

    paths = [storage.join(raw_dir, p) for p in df["path"]]
    fn = functools.partial(inspect_file, max_pixels=max_pixels)
    bar = functools.partial(progress, desc="validate", total=len(paths))
    if workers <= 1 or len(paths) < 64:
        facts = [fn(p) for p in bar(paths)]
    else:
        chunk = max(1, min(64, len(paths) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            facts = list(bar(pool.map(fn, paths, chunksize=chunk)))
    table = pd.DataFrame([f.as_dict() for f in facts], columns=list(ImageFacts.__dataclass_fields__))
    return pd.concat([df.reset_index(drop=True), table.drop(columns=["dicom_patient_id"])], axis=1)


def finish_facts(out: pd.DataFrame) -> pd.DataFrame:
    """What needs every row at once: patient ids from DICOM digests, labels per patient."""
    out = out.reset_index(drop=True)
    out["patient_id"] = out["patient_id"].replace("", None)
    # a DICOM's PatientID names the patient when the source gave none (as a digest: raw ids stay in the files)
    from_dicom = (out["patient_id_origin"] == "file") & (out["dicom_patient_digest"] != "")
    out.loc[from_dicom, "patient_id"] = "dicom:" + out.loc[from_dicom, "dicom_patient_digest"]
    out.loc[from_dicom, "patient_id_origin"] = "dicom"
    out["patient_labels"] = out.groupby("patient_id", dropna=False)["label"].transform("nunique")
    return out


def build_facts(raw_dir: Path, df: pd.DataFrame, max_pixels: int, workers: int) -> pd.DataFrame:
    """Read every file once (sha256, header, decode check) in ``workers`` processes."""
    return finish_facts(compute_facts(raw_dir, df, max_pixels, workers))


def read_raw(raw_dir: str | Path) -> pd.DataFrame:
    raw_dir = Path(raw_dir)
    raw = manifest.read(raw_dir / manifest.MANIFEST_NAME, required=tuple(manifest.RAW_COLUMNS))
    if raw.empty:
        raise DataError(f"{raw_dir / manifest.MANIFEST_NAME}: the manifest has no rows")
    return raw


def partition_rows(n: int, parts: int, part: int) -> slice:
    """Rows of part ``part`` of ``parts``: contiguous, nearly equal runs of the manifest."""
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return slice(int(bounds[part]), int(bounds[part + 1]))


def _suites(gx, classes: list[str], v):
    E = gx.expectations
    images = gx.ExpectationSuite(name="cxr_images")
    checks = [
        ("decodable", E.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True])),
        ("dimensions_in_range", E.ExpectColumnValuesToBeBetween(column="width", min_value=v.min_side,
                                                                max_value=v.max_side)),
        ("dimensions_in_range", E.ExpectColumnValuesToBeBetween(column="height", min_value=v.min_side,
                                                                max_value=v.max_side)),
        ("transparent_pixels", E.ExpectColumnValuesToBeBetween(column="transparent_share", min_value=0,
                                                               max_value=v.max_transparent_share)),
        ("blank_film", E.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=v.min_pixel_std)),
        ("multi_frame", E.ExpectColumnValuesToBeBetween(column="frames", min_value=0, max_value=1)),
        ("label_in_classes", E.ExpectColumnValuesToBeInSet(column="label", value_set=list(classes))),
        ("unique_sha256", E.ExpectColumnValuesToBeUnique(column="sha256")),
        ("patient_id_present", E.ExpectColumnValuesToNotBeNull(column="patient_id")),
        ("one_label_per_patient", E.ExpectColumnValuesToBeBetween(column="patient_labels", min_value=1,
                                                                  max_value=1)),
    ]
    if v.phi == "quarantine":  # DICOM files that still carry identifying attributes or burned-in text
        checks += [
            ("deidentified", E.ExpectColumnValuesToBeBetween(column="phi_count", min_value=0, max_value=0)),
            ("deidentified", E.ExpectColumnValuesToNotBeInSet(column="burned_in_annotation", value_set=["YES"])),
        ]
    for check_id, exp in checks:
        exp.meta = {"id": check_id, "critical": check_id in v.critical}
        images.add_expectation(exp)
    classes = gx.ExpectationSuite(name="cxr_class_share")
    share = E.ExpectColumnValuesToBeBetween(column="share", min_value=v.class_share.min, max_value=v.class_share.max)
    share.meta = {"id": "class_share", "critical": "class_share" in v.critical}
    classes.add_expectation(share)
    # most of a class without a real patient id (each file its own patient) fails, unless a written reason accepts it
    ids = E.ExpectColumnValuesToBeBetween(column="patient_id_share", min_value=v.min_patient_id_share, max_value=1.0)
    ids.meta = {"id": "patient_id_present",
                "critical": "patient_id_present" in v.critical and not v.accept_missing_patient_ids}
    classes.add_expectation(ids)
    return images, classes


class GxRunner:
    """One ephemeral GX context whose Data Docs site is ``docs_dir``."""

    def __init__(self, classes: list[str], v, docs_dir: Path) -> None:
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.ctx.update_data_docs_site(site_name="local_site", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        source = self.ctx.data_sources.add_pandas("manifest")
        images, class_suite = _suites(gx, classes, v)
        self.definitions = {}
        for name, suite in (("images", images), ("classes", class_suite)):
            batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all")
            suite = self.ctx.suites.add(suite)
            self.definitions[name] = self.ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"cxr_{name}", data=batch, suite=suite))

    def run(self, name: str, df: pd.DataFrame) -> list[dict]:
        """The result of each expectation of suite ``name`` on ``df``; raises :class:`DataError` when one could
        not run (it raised: a column missing, impossible bounds), since GX reports such a check as failed with 0
        unexpected rows, which would quarantine nothing."""
        res = self.definitions[name].run(batch_parameters={"dataframe": df}, result_format="COMPLETE")
        out = []
        for r in res.results:
            cfg = r.expectation_config
            out.append({
                "id": cfg.meta["id"],
                "critical": bool(cfg.meta["critical"]),
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "unexpected_count": int(r.result.get("unexpected_count") or 0),
                "unexpected_index_list": list(r.result.get("unexpected_index_list") or []),
                "exception": raised(r.exception_info),
            })
        broken = [r for r in out if r["exception"] is not None]
        if broken:
            lines = [f"  {r['id']} ({r['expectation']} on {r['column']}): {r['exception']}" for r in broken]
            raise DataError(f"{len(broken)} expectation(s) of the {name} suite could not run, and a check that could "
                            "not run is a failure, never a pass:\n" + "\n".join(lines)
                            + "\nFix the cause (impossible bounds in the validate params, a column missing from "
                              "facts made by another version of cxr), then run validate again.")
        return out

    def build_docs(self) -> None:
        self.ctx.build_data_docs()


def raised(info) -> str | None:
    """The exception text of an expectation that raised (GX's ``exception_info``: one record, or one per metric),
    None when it ran."""
    if not info:
        return None
    records = [info] if "raised_exception" in info else [x for x in info.values() if isinstance(x, dict)]
    texts = [str(x.get("exception_message") or "an exception without a message") for x in records
             if x.get("raised_exception")]
    return "; ".join(dict.fromkeys(texts)) or None


def _numbers(check: str, row: pd.Series, v) -> str:
    """The detail of a failed row expectation, with the value against the limit ('' when none)."""
    if v is None:
        return ""
    if check == "dimensions_in_range":
        return Limits(int(v.min_side), int(v.max_side)).side_problem(int(row["width"]), int(row["height"]))
    if check == "transparent_pixels":
        return transparency_detail(float(row["transparent_share"]), float(v.max_transparent_share))
    if check == "blank_film":
        return blank_detail(float(row["pixel_std"]), float(v.min_pixel_std))
    return ""


def quarantine(facts: pd.DataFrame, results: list[dict], v=None) -> pd.Series:
    """Reason per row ('' = keep) from failed row-level expectations; duplicates keep one copy. ``v``
    (the validate params) puts the numbers into the reasons: ``dimensions_in_range: 8x8: shorter side 8 <
    limit 32 (validate.min_side)``."""
    reason = pd.Series("", index=facts.index, dtype=object)
    failed: dict[str, set] = {}
    for r in results:  # several expectations share an id (width and height are both dimensions_in_range)
        if not r["success"]:
            failed.setdefault(r["id"], set()).update(r["unexpected_index_list"])
    for check in ROW_EXPECTATIONS:
        rows = failed.get(check, set())
        if check == "decodable":
            for i in rows:
                if reason[i] == "":
                    code, detail = facts.at[i, "reason"] or "not decodable", facts.at[i, "detail"]
                    reason[i] = f"decodable: {code}: {detail}" if detail else f"decodable: {code}"
            continue
        if check == "unique_sha256" and rows:
            dup = facts.loc[sorted(rows)]
            for _, group in dup.groupby("sha256"):
                if group["label"].nunique() > 1:
                    labels = "/".join(sorted(group["label"].unique()))
                    for i in group.index:
                        if reason[i] == "":
                            reason[i] = f"unique_sha256: same image under labels {labels}"
                else:
                    first = group.sort_values("path").index[0]
                    for i in group.index:
                        if i != first and reason[i] == "":
                            reason[i] = f"unique_sha256: duplicate of {facts.at[first, 'path']}"
            continue
        for i in rows:
            if reason[i] == "":
                detail = _numbers(check, facts.loc[i], v)
                reason[i] = f"{check}: {detail}" if detail else check
    return reason


def _warning_counts(df: pd.DataFrame) -> dict:
    """Usable rows per named warning (``multi_frame``): kept, and flagged in the manifest's ``warnings``."""
    counts: dict[str, int] = {}
    for text in df.get("warnings", pd.Series(dtype=object)).fillna(""):
        for w in filter(None, str(text).split("; ")):
            counts[w.split(":")[0]] = counts.get(w.split(":")[0], 0) + 1
    return counts


def phi_summary(facts: pd.DataFrame, policy: str) -> dict:
    """The de-identification audit over every DICOM file: counts and attribute names, never values."""
    dicom = facts[facts["format"] == "DICOM"]
    names: dict[str, int] = {}
    for attrs in dicom["phi_attributes"]:
        for a in filter(None, str(attrs).split(";")):
            names[a] = names.get(a, 0) + 1
    return {"policy": policy, "dicom_files": len(dicom),
            "files_with_identifying_attributes": int((dicom["phi_count"] > 0).sum()),
            "identifying_attributes": dict(sorted(names.items(), key=lambda kv: -kv[1])),
            "burned_in_annotation_yes": int((dicom["burned_in_annotation"] == "YES").sum()),
            "files_with_private_tags": int((dicom["private_tags"] > 0).sum())}


def class_shares(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per class: images, share of all images, and share of its images with a real patient id (not the
    one-patient-per-file fallback; 1 for a class without images)."""
    counts = df["label"].value_counts()
    total = max(1, len(df))
    origin = df["patient_id_origin"] if "patient_id_origin" in df.columns else pd.Series("", index=df.index)
    real = (origin != "file").groupby(df["label"]).mean()
    return pd.DataFrame({"label": classes, "count": [int(counts.get(c, 0)) for c in classes],
                         "share": [counts.get(c, 0) / total for c in classes],
                         "patient_id_share": [float(real.get(c, 1.0)) for c in classes]})


def source_summary(df: pd.DataFrame) -> dict:
    """Images (and licences, when the source manifest gives them) per source."""
    out = {}
    for src, group in df.groupby(df["source"].fillna("").astype(str)):
        licences = sorted(set(group["license"].fillna("").astype(str)) - {""}) if "license" in group else []
        out[src] = {"images": len(group), "license": "; ".join(licences)}
    return out


def validate_into(classes: list[str], v, raw_dir: str | Path, out_dir: str | Path, report_dir: str | Path,
                  facts: pd.DataFrame | None = None) -> dict:
    """Validate ``raw_dir/manifest.csv`` under the ``validate`` params ``v``; write the validated manifest
    to ``out_dir`` and the reports to ``report_dir``; raise when a critical expectation fails.
    ``facts``: the rows' facts already computed (:func:`compute_facts`, by partitions)."""
    raw_dir, out_dir, report_dir = Path(raw_dir), Path(out_dir), Path(report_dir)
    if facts is None:
        raw = read_raw(raw_dir)
        workers = min(v.workers, os.cpu_count() or 1)
        log.info("checking %d images with %d workers", len(raw), workers)
        facts = compute_facts(raw_dir, raw, v.max_pixels, workers)
    facts = finish_facts(facts)
    with atomic_path(report_dir / "data_docs", directory=True) as tmp_docs:
        gx_runner = GxRunner(classes, v, tmp_docs)
        image_results = gx_runner.run("images", facts)
        facts["reason"] = quarantine(facts, image_results, v)
        facts["status"] = np.where(facts["reason"] == "", "ok", "quarantined")
        kept = facts[facts["status"] == "ok"]
        shares = class_shares(kept, list(classes))
        class_results = gx_runner.run("classes", shares)
        gx_runner.build_docs()
        expectations = image_results + class_results
        critical_failed = [r for r in expectations if r["critical"] and not r["success"]]
        audit = source_bias_audit(kept, v.bias_audit) if v.bias_audit.enabled else {"enabled": False}
        q = facts[facts["status"] != "ok"]
        summary = {
            "passed": not critical_failed,
            "images": len(facts),
            "usable": len(kept),
            "quarantined": len(q),
            "quarantine_reasons": {k.split(":")[0]: int(n) for k, n in
                                   q["reason"].str.split(":").str[0].value_counts().items()},
            "per_class": {r.label: {"count": r.count, "share": round(r.share, 4),
                                    "patient_id_share": round(r.patient_id_share, 4)} for r in shares.itertuples()},
            "patients": int(kept["patient_id"].nunique()),
            "formats": {k: int(n) for k, n in kept["format"].value_counts().items()},
            "warnings": _warning_counts(kept),
            "sources": source_summary(kept),
            "expectations": [{k: r[k] for k in ("id", "expectation", "column", "critical", "success",
                                                "unexpected_count")} for r in expectations],
            "source_bias_audit": audit,
            "missing_patient_ids_accepted": v.accept_missing_patient_ids
            if any(r["id"] == "patient_id_present" and not r["success"] for r in class_results) else None,
            "deidentification": phi_summary(facts, v.phi),
            "data_docs": str(report_dir / "data_docs" / "index.html"),
        }
    write_json(report_dir / "summary.json", summary)
    log.info("%d images: %d usable, %d quarantined %s; %d patients", summary["images"], summary["usable"],
             summary["quarantined"], summary["quarantine_reasons"] or "", summary["patients"])
    if audit.get("flagged"):
        log.warning("source-bias audit: %s", audit["warning"])
    if critical_failed:
        lines = [f"  {r['id']} ({r['expectation']} on {r['column']}): {r['unexpected_count']} unexpected"
                 for r in critical_failed]
        if any(r["id"] == "patient_id_present" for r in critical_failed):
            few = {r.label: round(r.patient_id_share, 2) for r in shares.itertuples()
                   if r.patient_id_share < v.min_patient_id_share}
            lines.append(f"  classes whose images mostly lack a patient id (share with one): {few}; each such file is "
                         "treated as its own patient, so one patient's films can land in train and test. Give "
                         "patient ids (a CSV manifest with a patient_id column, Kermany-style file names, DICOM), "
                         "or set validate.accept_missing_patient_ids to a written reason (who accepts it, and why)")
        raise DataError("critical expectations failed (validate.critical):\n" + "\n".join(lines)
                        + f"\nSee {report_dir / 'summary.json'} and {summary['data_docs']}")
    if summary["missing_patient_ids_accepted"]:
        log.warning("classes lack patient ids; accepted: %s", summary["missing_patient_ids_accepted"])
    cols = [c for c in manifest.COLUMNS if c in facts.columns]
    with atomic_path(out_dir, directory=True) as tmp:
        manifest.write(kept[cols], tmp / manifest.MANIFEST_NAME)
        manifest.write(q[cols], tmp / "quarantine.csv")
    return summary
