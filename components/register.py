"""Register: a model that passed its gate becomes a version in the MLflow registry.

The version is created with its tags in one call (git commit, data version, manifest digest, lineage
counts and digest, params hash, backbone, image size, classes, gated metrics, the gate report, the
champion it was gated against, an accepted shortcut risk), so no version ever exists without them;
the model card is logged to the run and set as the version's description; the alias ``challenger``
moves to it last. A failed gate registers nothing. The same training run gated again (after a
promotion re-runs the gate) refreshes its existing version instead of registering a duplicate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from components.core.contract.errors import CxrError, RefusedError, ServiceError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="register",
    help="register a gated model version in MLflow (tags, model card) and alias it challenger",
    params=("data", "validate", "split", "preprocess", "train", "evaluate", "gate", "registry", "mlflow"),
    inputs=(
        Port("gate_report", "reports/gate.json", "the gate's decision", kind="file"),
        Port("model_dir", "models", "the trained model folder"),
        Port("metrics", "reports/metrics.json", "the candidate's test metrics", kind="file"),
        Port("ingest_report", "reports/ingest/summary.json", "files skipped at ingest (for the model card)",
             kind="file", optional=True),
        Port("validation", "reports/validation/summary.json", "the validation summary (for the model card)",
             kind="file", optional=True),
        Port("split_report", "reports/split/summary.json", "the split summary (for the model card)", kind="file",
             optional=True),
        Port("external_summary", "data/external/summary.json", "the external sets (for the model card)",
             kind="file", optional=True),
    ),
    outputs=(Port("out", "reports/registration", "registration.json, model_card.md, model_card.html",
                  dvc=((".", "uncached"),)),),
    cache=False,
)


def _optional_json(path: str | Path | None) -> dict | None:
    from components.core.contract.fsutil import read_json

    return read_json(path) if path and Path(path).is_file() else None


def models_temperature(train: dict) -> float:
    return float((train.get("calibration") or {}).get("temperature", 1.0))


@under_spec(SPEC)
def run(params, gate_report: str | Path, model_dir: str | Path, metrics: str | Path, out: str | Path,
        validation: str | Path | None = None, split_report: str | Path | None = None,
        external_summary: str | Path | None = None, ingest_report: str | Path | None = None) -> dict:
    """Register when the gate passed; always write the candidate's model card (Markdown and HTML) to ``out``."""
    from components.core.contract.fsutil import read_json, write_json, write_text
    from components.core.registry import modelcard, registry, tracking

    gate_path, metrics_path, out_dir = Path(gate_report), Path(metrics), Path(out)
    validation_path, split_path, external_path = validation, split_report, external_summary
    gate = read_json(gate_path)
    name = params.registry.model_name
    train = read_json(Path(model_dir) / "train_summary.json")
    metrics = read_json(metrics_path)
    card = modelcard.render(name=name, metrics=metrics, train=train, params=params.declared_dump(),
                            validation=_optional_json(validation_path), split=_optional_json(split_path), gate=gate,
                            external=_optional_json(external_path), ingest=_optional_json(ingest_report))
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path, card_path = out_dir / "registration.json", out_dir / "model_card.md"
    write_text(card_path, card)
    write_text(card_path.with_suffix(".html"), modelcard.to_html(card, f"Model card: {name}"))
    if not gate.get("passed"):
        result = {"registered": False, "name": name, "reason": "gate failed: " + "; ".join(gate.get("failed", [])),
                  "model_card": str(card_path)}
        write_json(out_path, result)
        log.info("not registered: %s", result["reason"])
        return result
    run_id = train.get("run_id")
    if not run_id:
        raise CxrError(f"{model_dir}/train_summary.json has no MLflow run id: train with MLflow on to register")
    gated, logged = (gate.get("candidate") or {}).get("weights_sha256"), train.get("weights_sha256")
    if gated and logged and gated != logged:
        raise RefusedError(f"the gate scored a model whose weights ({gated[:19]}…) are not those training run {run_id} "
                           f"logged ({logged[:19]}…): {model_dir}/model.keras was changed after training. Registering "
                           "would register the logged model, which this gate did not decide on: retrain (or re-run "
                           "the gate on the logged model)")
    tracking.setup(params)
    import mlflow

    gated_metrics = {f"metric.{k}": v for k, v in gate["candidate"]["metrics"].items() if v is not None}
    compact_gate = json.dumps({"passed": True, "gated_against": gate.get("gated_against"),
                               "checks": [{k: c.get(k) for k in ("check", "value", "passed")} for c in gate["checks"]]})
    lineage = read_json(Path(model_dir) / "lineage.json") if (Path(model_dir) / "lineage.json").is_file() else {}
    tags = {
        registry.GATE_TAG: "true",
        "gate_report": compact_gate[:5000],
        # the champion this decision was made against: `cxr promote` refuses when it is no longer the champion
        "gated_against": str(gate.get("gated_against") or "none"),
        "manifest_digest": lineage.get("manifest_digest", ""),
        "lineage.seen_digest": lineage.get("seen_digest", ""),
        "lineage.train_patients": str((lineage.get("counts") or {}).get("train", "")),
        "lineage.val_patients": str((lineage.get("counts") or {}).get("val", "")),
        "git_commit": tracking.git_commit(),
        "data_version": train.get("data_version", ""),
        "params_hash": tracking.params_hash(params),
        "backbone": train.get("backbone", ""),
        "image_size": str(train.get("image_size", "")),
        "run_id": run_id,
        "temperature": str(models_temperature(train)),
        "operating_points": json.dumps({c: v["threshold"] for c, v in
                                        ((metrics.get("thresholds") or {}).get("val") or {}).items()}),
        **({"weights_sha256": gated} if gated else {}),
        **{k: str(v) for k, v in gated_metrics.items()},
    }
    if gate.get("shortcut_accepted"):
        tags["shortcut_risk_accepted"] = gate["shortcut_accepted"][:5000]
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(gate_path), artifact_path="gate")
            mlflow.log_artifact(str(card_path), artifact_path="model_card")
            mlflow.log_artifact(str(card_path.with_suffix(".html")), artifact_path="model_card")
        client = registry.client()
        mv = _existing_version(client, name, run_id)
        if mv is None:
            mv = mlflow.register_model(train.get("mlflow_model_uri") or f"runs:/{run_id}/model", name, tags=tags)
            reused = False
        else:  # the same trained model gated again (e.g. after a promotion): refresh its decision, no duplicate
            for k, v in tags.items():
                client.set_model_version_tag(name, mv.version, k, v)
            reused = True
        client.update_model_version(name, mv.version, description=card[:60000])
        client.set_registered_model_alias(name, registry.CHALLENGER, mv.version)
    except CxrError:
        raise
    except Exception as err:
        raise ServiceError(f"registering {name} in MLflow failed: {type(err).__name__}: {str(err)[:500]}. "
                           "Nothing was aliased; re-run `cxr register` when the server is back.") from None
    result = {"registered": True, "name": name, "version": str(mv.version), "alias": registry.CHALLENGER,
              "run_id": run_id, "model_uri": f"models:/{name}/{mv.version}", "model_card": str(card_path),
              "reused_version": reused, "gated_against": tags["gated_against"]}
    write_json(out_path, result)
    log.info("%s %s v%s (alias %s; gated against %s)", "refreshed" if reused else "registered", name, mv.version,
             registry.CHALLENGER, tags["gated_against"])
    return result


def _existing_version(client, name: str, run_id: str):
    """A version of ``name`` already registered from this training run, if any."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception:  # the model does not exist yet
        return None
    found = [v for v in versions if run_id in (v.run_id, (v.tags or {}).get("run_id"))]
    return min(found, key=lambda v: int(v.version)) if found else None
