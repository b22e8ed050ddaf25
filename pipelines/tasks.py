"""How each pipeline step runs as a KFP task: the cluster settings and KFP-only details, in one table.

A step's contract (params, inputs, outputs, cache policy) is its ``SPEC`` in ``components/<step>.py`` and
knows nothing of Kubeflow. This table adds, per task: CPU/memory requests and limits, GPU, the Kubernetes
Secrets it reads, retries, the KFP artifact type of its outputs (``Model`` shows as a model in the UI), the
extra outputs it fills for the KFP UI (HTML, Markdown, Metrics, ClassificationMetrics), the options fed by a
pipeline parameter or built from its output paths, and how the pipeline branches on it. The order is the
pipeline's. The components (``pipelines/components/``) and the pipeline (``pipelines/pipeline.py``) are written
out by hand; a test checks them against spec + table (:func:`wiring` says which output feeds each input).
``pipelines/runtime.py`` runs them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from components.core.contract.spec import Port, StepSpec

ArtifactType = Literal["Dataset", "Model", "HTML", "Markdown", "Metrics", "ClassificationMetrics"]


def _write(path: str, obj: Any) -> None:
    """A file at a Metrics artifact's path: without one the task never hits the KFP cache."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, default=str))


@dataclass(frozen=True)
class View:
    """An output for the KFP UI only, filled from the step's summary and output paths after ``run()``."""

    name: str
    artifact: ArtifactType
    help: str
    fill: Callable[[dict, dict, Any], None]  # (summary, the run() paths, the artifact) → None


@dataclass(frozen=True)
class Task:
    """One step as a KFP task (see the module docstring)."""

    step: str
    # (cpu request, cpu limit, memory request, memory limit)
    resources: tuple[str, str, str, str] = ("1", "2", "2G", "4G")
    gpu: bool = False
    secrets: tuple[Literal["mlflow", "kaggle"], ...] = ()
    # how often the task re-runs its step after a transient failure (exit 5, SIGKILL): pipelines/runtime.py
    retries: int = 2
    # output port → KFP artifact type (default Dataset); an input takes the type of the output feeding it
    artifacts: tuple[tuple[str, ArtifactType], ...] = ()
    views: tuple[View, ...] = ()
    # options fed by the pipeline parameter of the same name (e.g. data_uri)
    pipeline_params: tuple[str, ...] = ()
    # options built from the task's output paths, e.g. ("state", "{out}-state")
    templates: tuple[tuple[str, str], ...] = ()
    # the task returns this key of the summary as a bool (the pipeline branches on it), else the summary as JSON
    returns: str | None = None
    # the task runs only when this task returned True
    when: str | None = None
    # "trainjob": with train.workers > 1 the task launches a Kubeflow Trainer TrainJob (pipelines/trainjob.py)
    launcher: Literal["", "trainjob"] = ""
    # metadata set on the first output artifact, from the summary
    metadata: Callable[[dict], dict] | None = None

    def artifact(self, port: str) -> ArtifactType:
        return dict(self.artifacts).get(port, "Dataset")


# ---------------------------------------------------------------- what the KFP UI shows
def _data_docs(summary: dict, paths: dict, artifact: Any) -> None:
    reports = Path(paths["reports"])
    pages = sorted((reports / "data_docs" / "validations").rglob("*.html"))
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(pages[0] if pages else reports / "data_docs" / "index.html", artifact.path)


def _validation_counts(summary: dict, paths: dict, metrics: Any) -> None:
    for key in ("images", "usable", "quarantined", "patients"):
        metrics.log_metric(key, summary[key])
    audit = summary["source_bias_audit"]
    if audit.get("balanced_accuracy") is not None:
        metrics.log_metric("bias_audit_balanced_accuracy", audit["balanced_accuracy"])
    _write(metrics.path, summary)


def _scores(summary: dict, paths: dict, scores: Any) -> None:
    m = json.loads(Path(paths["metrics"]).read_text())
    for key in ("accuracy", "macro_f1", "macro_roc_auc", "ece"):
        if m[key] is not None:
            scores.log_metric(key, m[key])
    for c, v in m["per_class"].items():
        if v["recall"] is not None:
            scores.log_metric(f"recall_{c}", v["recall"])
    _write(scores.path, m)


def _confusion(summary: dict, paths: dict, confusion: Any) -> None:
    m = json.loads(Path(paths["metrics"]).read_text())
    confusion.log_confusion_matrix(m["confusion_matrix"]["labels"], m["confusion_matrix"]["matrix"])


def _decision(summary: dict, paths: dict, decision: Any) -> None:
    decision.log_metric("passed", 1.0 if summary["passed"] else 0.0)
    decision.log_metric("failed_checks", float(len(summary.get("failed", []))))
    _write(decision.path, summary)


def _review_gallery(summary: dict, paths: dict, page: Any) -> None:
    Path(page.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(paths["out"]) / "gallery.html", page.path)


def _model_card(summary: dict, paths: dict, card: Any) -> None:
    Path(card.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(paths["out"]) / "model_card.md", card.path)


# ---------------------------------------------------------------- the table, in pipeline order
TASKS: tuple[Task, ...] = (
    Task("ingest", resources=("1", "2", "2G", "8G"), secrets=("kaggle",), retries=3,
         pipeline_params=("data_uri", "label_overrides"), metadata=lambda s: {"images": s.get("images")}),
    Task("validate", resources=("2", "4", "4G", "8G"),
         views=(View("data_docs", "HTML", "the Great Expectations validation page", _data_docs),
                View("summary", "Metrics", "counts and the source-bias audit", _validation_counts))),
    Task("split", resources=("500m", "1", "1G", "2G")),
    Task("preprocess", resources=("2", "8", "4G", "16G")),
    # no GPU request: the cluster settings are fixed when the pipeline is compiled, and the task usually runs
    # switched off (seconds) or with the small CNN (CPU); a review with the recipe's backbone wants one
    Task("review-labels", resources=("2", "4", "4G", "16G"),
         views=(View("gallery", "HTML", "the top suspects with their Grad-CAM", _review_gallery),)),
    Task("train", resources=("4", "8", "16G", "48G"), gpu=True, secrets=("mlflow",), artifacts=(("out", "Model"),),
         templates=(("state", "{out}-state"),), launcher="trainjob",
         metadata=lambda s: {"framework": "keras", "backbone": s["backbone"], "image_size": s["image_size"],
                             "mlflow_run_id": s["run_id"] or ""}),
    Task("external", resources=("2", "4", "4G", "16G"), secrets=("kaggle",), retries=3),
    Task("evaluate", resources=("2", "4", "8G", "16G"), secrets=("mlflow",),
         views=(View("scores", "Metrics", "accuracy, macro F1, ROC-AUC, ECE, recall per class", _scores),
                View("confusion", "ClassificationMetrics", "the test confusion matrix", _confusion))),
    Task("gate", resources=("2", "4", "8G", "16G"), secrets=("mlflow",), returns="passed",
         views=(View("decision", "Metrics", "passed (1/0) and the number of failed checks", _decision),)),
    Task("register", resources=("500m", "1", "2G", "4G"), secrets=("mlflow",), retries=3, when="gate",
         views=(View("model_card", "Markdown", "the model card", _model_card),)),
)

# the cxr-monitor pipeline's single task (pipelines/monitor.py)
MONITOR = Task("monitor", resources=("500m", "1", "2G", "4G"), secrets=("mlflow",))


def task(step: str) -> Task:
    for t in TASKS:
        if t.step == step:
            return t
    raise KeyError(f"step {step!r} is not a task of the cxr-training pipeline "
                   f"(tasks: {', '.join(t.step for t in TASKS)})")


def task_specs() -> list[tuple[StepSpec, Task]]:
    """(spec, task) of every step of the cxr-training pipeline, in pipeline order."""
    from components import catalog

    return [(catalog.spec(t.step), t) for t in TASKS]


def wiring(pairs: list[tuple[StepSpec, Task]]) -> dict[tuple[str, str], tuple[str, str, str, str]]:
    """Which earlier task output feeds each input: ``(step, input) → (step, output, sub-path, artifact type)``.

    An input is fed by the output whose default path equals it or contains it (the longest such
    path), exactly as under DVC: ``data/validated/manifest.csv`` is ``manifest.csv`` inside
    validate's ``data/validated``.
    """
    produced: list[tuple[StepSpec, Task, Port]] = []
    out: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    for spec, task in pairs:
        for port in spec.inputs:
            found = [(ps, pt, pp) for ps, pt, pp in produced
                     if port.path == pp.path or port.path.startswith(pp.path + "/")]
            if not found:
                raise ValueError(f"{spec.name}.{port.name} ({port.path}): no earlier pipeline step produces it")
            ps, pt, pp = max(found, key=lambda t: len(t[2].path))
            out[(spec.name, port.name)] = (ps.name, pp.name, port.path[len(pp.path):].lstrip("/"), pt.artifact(pp.name))
        produced += [(spec, task, p) for p in spec.outputs]
    return out
