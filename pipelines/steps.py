"""Lightweight KFP components: thin wrappers whose bodies call ``components.<step>.run``.

Each body imports what it needs (KFP ships only the function's source to the container, which is
the project image: ``base_image``). Parameters arrive as the ``params.yaml`` sections a step
reads, as in ``dvc.yaml``; ``parse_params`` rebuilds and validates them inside the task.
"""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def ingest_op(data: dict, data_uri: str, raw: Output[Dataset]) -> str:
    """Ingest the data: ``data_uri`` ``dvc://<git-url>@<rev>`` fetches what a commit pins, else ``data``."""
    import json

    from components import ingest
    from components.core.config import parse_params

    if data_uri.startswith("dvc://"):
        summary = ingest.fetch_dvc(data_uri, raw.path)
    else:
        summary = ingest.run(parse_params({"data": data}, "pipeline parameters"), raw.path)
    raw.metadata["images"] = summary["images"]
    return json.dumps(summary, default=str)


def validate_op(data: dict, validate: dict, raw: Input[Dataset], validated: Output[Dataset],
                data_docs: Output[HTML], summary: Output[Metrics]) -> bool:
    """Great Expectations validation, quarantine and the source-bias audit."""
    import json
    import os
    import shutil
    from pathlib import Path

    from components import validate as step
    from components.core.config import parse_params

    reports = Path(validated.path + "-reports")
    result = step.run(parse_params({"data": data, "validate": validate}, "pipeline parameters"), raw.path,
                      validated.path, reports)
    pages = sorted((reports / "data_docs" / "validations").rglob("*.html"))
    os.makedirs(os.path.dirname(data_docs.path), exist_ok=True)
    shutil.copy(pages[0] if pages else reports / "data_docs" / "index.html", data_docs.path)
    for key in ("images", "usable", "quarantined", "patients"):
        summary.log_metric(key, result[key])
    audit = result["source_bias_audit"]
    if audit.get("balanced_accuracy") is not None:
        summary.log_metric("bias_audit_balanced_accuracy", audit["balanced_accuracy"])
    Path(summary.path).write_text(json.dumps(result, default=str))  # a file at .path: cacheable
    return bool(audit.get("flagged", False))


def split_op(data: dict, split: dict, validated: Input[Dataset], splits: Output[Dataset]) -> str:
    """Train/val/test by patient, stratified by label."""
    import json
    from pathlib import Path

    from components import split as step
    from components.core.config import parse_params

    result = step.run(parse_params({"data": data, "split": split}, "pipeline parameters"),
                      Path(validated.path) / "manifest.csv", splits.path, splits.path + "-reports")
    return json.dumps(result["splits"])


def preprocess_op(data: dict, validate: dict, preprocess: dict, train: dict, splits: Input[Dataset],
                  raw: Input[Dataset], shards: Output[Dataset]) -> str:
    """Decode every split once into uint8 shards."""
    import json

    from components import preprocess as step
    from components.core.config import parse_params

    p = parse_params({"data": data, "validate": validate, "preprocess": preprocess, "train": train},
                     "pipeline parameters")
    return json.dumps(step.run(p, splits.path, raw.path, shards.path))


def external_op(data: dict, validate: dict, preprocess: dict, train: dict, evaluate: dict,
                validated: Input[Dataset], external: Output[Dataset]) -> str:
    """External test sets (evaluate.external): ingested and validated like the main data."""
    import json
    from pathlib import Path

    from components import external as step
    from components.core.config import parse_params

    p = parse_params({"data": data, "validate": validate, "preprocess": preprocess, "train": train,
                      "evaluate": evaluate}, "pipeline parameters")
    return json.dumps(step.run(p, Path(validated.path) / "manifest.csv", external.path), default=str)


def train_op(data: dict, preprocess: dict, train: dict, mlflow: dict, shards: Input[Dataset],
             model: Output[Model]) -> str:
    """Phased transfer learning, logged to MLflow (the task that gets the GPU)."""
    import json

    from components import train as step
    from components.core.config import parse_params

    p = parse_params({"data": data, "preprocess": preprocess, "train": train, "mlflow": mlflow},
                     "pipeline parameters")
    summary = step.run(p, shards.path, model.path, model.path + "-state")
    model.metadata.update({"framework": "keras", "backbone": summary["backbone"],
                           "image_size": summary["image_size"], "mlflow_run_id": summary["run_id"] or ""})
    return json.dumps(summary, default=str)


def evaluate_op(data: dict, train: dict, evaluate: dict, mlflow: dict, model: Input[Model],
                shards: Input[Dataset], external: Input[Dataset], report: Output[Dataset], metrics: Output[Metrics],
                classification: Output[ClassificationMetrics]) -> float:
    """Test-split evaluation; the metrics JSON goes to ``report/metrics.json`` for the gate."""
    import json
    from pathlib import Path

    from components import evaluate as step
    from components.core.config import parse_params

    p = parse_params({"data": data, "train": train, "evaluate": evaluate, "mlflow": mlflow},
                     "pipeline parameters")
    Path(report.path).mkdir(parents=True, exist_ok=True)
    metrics_file = Path(report.path) / "metrics.json"
    step.run(p, model.path, shards.path, Path(report.path) / "eval", metrics_file, external_dir=external.path)
    m = json.loads(metrics_file.read_text())
    for key in ("accuracy", "macro_f1", "macro_roc_auc", "ece"):
        if m[key] is not None:
            metrics.log_metric(key, m[key])
    for c, v in m["per_class"].items():
        if v["recall"] is not None:
            metrics.log_metric(f"recall_{c}", v["recall"])
    Path(metrics.path).write_text(json.dumps(m))  # a file at .path: cacheable (see DESIGN §4)
    classification.log_confusion_matrix(m["confusion_matrix"]["labels"], m["confusion_matrix"]["matrix"])
    return float(m["accuracy"] or 0.0)


def gate_op(data: dict, validate: dict, gate: dict, registry: dict, mlflow: dict, report: Input[Dataset],
            shards: Input[Dataset], raw: Input[Dataset], decision: Output[Metrics]) -> bool:
    """Thresholds and the re-evaluated champion. Returns one ``bool`` (passed); the checks and the
    reasons are in ``decision``. kfp.local silently takes the False branch of a ``dsl.If`` on an int
    literal, and also on a field of a NamedTuple output (seen with kfp 2.17.0): a single bool works."""
    import json
    from pathlib import Path

    from components import gate as step
    from components.core.config import parse_params

    p = parse_params({"data": data, "validate": validate, "gate": gate, "registry": registry, "mlflow": mlflow},
                     "pipeline parameters")
    result = step.run(p, Path(report.path) / "metrics.json", shards.path, Path(report.path) / "gate.json", raw.path)
    decision.log_metric("passed", 1.0 if result["passed"] else 0.0)
    Path(decision.path).write_text(json.dumps(result, default=str))
    return bool(result["passed"])


def register_op(data: dict, preprocess: dict, train: dict, evaluate: dict, registry: dict, mlflow: dict,
                report: Input[Dataset], model: Input[Model], external: Input[Dataset],
                model_card: Output[Markdown]) -> str:
    """Register the gated model version, alias ``challenger``; the model card as Markdown."""
    import shutil
    from pathlib import Path

    from components import register as step
    from components.core.config import parse_params

    p = parse_params({"data": data, "preprocess": preprocess, "train": train, "evaluate": evaluate,
                      "registry": registry, "mlflow": mlflow}, "pipeline parameters")
    out = Path(report.path + "-registration") / "registration.json"
    result = step.run(p, Path(report.path) / "gate.json", model.path, Path(report.path) / "metrics.json", out,
                      external_path=Path(external.path) / "summary.json")
    Path(model_card.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out.with_name("model_card.md"), model_card.path)
    return result.get("version", "")


STEPS = {f.__name__: f for f in (ingest_op, validate_op, split_op, preprocess_op, external_op, train_op,
                                 evaluate_op, gate_op, register_op)}


def build(image: str) -> dict:
    """The steps as KFP components running in ``image`` (the project image has every dependency)."""
    return {name: dsl.component(fn, base_image=image, install_kfp_package=False) for name, fn in STEPS.items()}
