"""MLflow model registry: resolve model URIs, load models safely, read aliases and gate tags.

The registry is the single source of truth: a version carries its gate result and metrics as
tags at creation, ``challenger`` points at the latest version that passed its gate, ``champion``
at the one in service, ``previous-champion`` at the one before.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from components.core.contract.config import PreprocessConfig
from components.core.contract.errors import CxrError, ServiceError
from components.core.contract.fsutil import read_json
from components.core.model import models

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
# preprocess.resize: how serving must fit an image to the model's square, as in training
RESIZE_MODES: tuple[str, ...] = get_args(PreprocessConfig.model_fields["resize"].annotation)
GATE_TAG = "gate_passed"


@dataclass
class ModelBundle:
    """A loaded model with what serving needs to know about it."""

    model: Any
    classes: list[str]
    image_size: int
    resize: str = "pad"
    name: str = ""
    version: str = ""
    alias: str = ""
    uri: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    # per-class decision thresholds chosen on the validation split (evaluate.target_sensitivity)
    thresholds: dict[str, float] = field(default_factory=dict)
    model_card: str = ""
    # the training-data reference and OOD threshold (components.core.eval.ood.OodReference); None: no OOD score
    ood: Any = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "uri": self.uri,
                "classes": self.classes, "image_size": self.image_size, "resize": self.resize,
                "temperature": models.temperature(self.model), "thresholds": self.thresholds,
                "metrics": self.metrics, "model_card": self.model_card,
                "ood": self.ood.describe() if self.ood is not None else None}

    def infer_ood(self, x):
        """(probabilities, OOD scores or None) for a uint8 batch, from one compiled pass through the model."""
        if self.ood is None:
            return self.infer(x), None
        if not hasattr(self, "_infer_ood"):
            import tensorflow as tf

            from components.core.eval.ood import scoring_model

            spec = tf.TensorSpec([None, self.image_size, self.image_size, 1], tf.uint8)
            both = scoring_model(self.model)
            self._infer_ood = tf.function(lambda t: both(t, training=False), input_signature=[spec],
                                          autograph=False)
        probs, feats = self._infer_ood(x)
        return probs.numpy(), self.ood.score(feats.numpy())

    def infer(self, x):
        """Probabilities for a uint8 batch through a graph compiled once (an eager Keras call of a deep
        model costs 10-20x more per image on a CPU)."""
        if not hasattr(self, "_infer"):
            import tensorflow as tf

            spec = tf.TensorSpec([None, self.image_size, self.image_size, 1], tf.uint8)
            model = self.model
            self._infer = tf.function(lambda t: model(t, training=False), input_signature=[spec],
                                      autograph=False)
        return self._infer(x).numpy()

    def decide(self, probs) -> dict[str, bool]:
        """The thresholded decision per class that has an operating point."""
        return {c: bool(probs[self.classes.index(c)] >= t) for c, t in self.thresholds.items() if c in self.classes}


def client():
    import mlflow

    return mlflow.MlflowClient()


def _service_error(what: str, err: Exception) -> ServiceError:
    return ServiceError(f"{what}: {type(err).__name__}: {str(err)[:500]}")


def version_by_alias(name: str, alias: str):
    """The model version behind ``name@alias``, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        code = getattr(err, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or "not found" in str(err).lower():
            return None
        raise _service_error(f"registry lookup {name}@{alias}", err) from None


def get_version(name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version(name, str(version))
    except MlflowException as err:
        if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise CxrError(f"model {name} has no version {version}") from None
        raise _service_error(f"registry lookup {name} v{version}", err) from None


def _find_keras_file(root: Path) -> Path:
    found = sorted(root.rglob("*.keras"))
    if not found:
        raise CxrError(f"no .keras model file under {root}: the artifact is missing or corrupted")
    return found[0]


def _download(uri: str) -> Path:
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as err:
        raise CxrError(f"cannot fetch model {uri}: {type(err).__name__}: {str(err)[:400]}") from None


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def load(uri: str) -> ModelBundle:
    """Load ``models:/name@alias``, ``models:/name/N``, ``runs:/<id>/model`` or a local path, with its OOD
    reference (``ood_reference.npz`` next to a local model; the training run's ``model_extras/`` otherwise).

    Models are always read from a ``.keras`` file with ``safe_mode=True``: no pickled code runs.
    The bundle knows the preprocessing its model was trained with (``resize``): from the version's
    ``resize`` tag (else its run's), the run's tags, or a local folder's ``train_summary.json``.
    """
    bundle = _load(uri)
    bundle.ood = load_reference(bundle)
    if bundle.ood is not None and bundle.ood.means.shape[0] != len(bundle.classes):
        raise CxrError(f"{uri}: the OOD reference has {bundle.ood.means.shape[0]} classes, the model "
                       f"{len(bundle.classes)}")
    return bundle


def load_reference(bundle: ModelBundle):
    """The bundle's :class:`~components.core.eval.ood.OodReference`, or None (a model trained before it existed)."""
    if not bundle.uri.startswith(("models:/", "runs:/")):
        return _run_reference(None, Path(bundle.uri).parent, bundle.uri)
    run_id = bundle.uri.split("/")[1] if bundle.uri.startswith("runs:/") else (
        get_version(bundle.name, bundle.version).run_id)
    return _run_reference(run_id, None, bundle.uri)


def reference_for(uri: str) -> tuple[Any, dict[str, str]]:
    """(OOD/drift reference or None, {name, version, uri}) for a model URI, without loading the model."""
    m = _MODELS_URI.match(uri)
    if m:
        mv = version_by_alias(m["name"], m["alias"]) if m["alias"] else get_version(m["name"], m["version"])
        if mv is None:
            raise CxrError(f"{uri}: model {m['name']} has no alias {m['alias']!r} (see `cxr promote`)")
        info = {"name": m["name"], "version": str(mv.version), "uri": uri}
        return _run_reference(mv.run_id or (mv.tags or {}).get("run_id"), None, uri), info
    if uri.startswith("runs:/"):
        return _run_reference(uri.split("/")[1], None, uri), {"name": "", "version": "", "uri": uri}
    path = Path(uri)
    folder = path if path.is_dir() else path.parent
    return _run_reference(None, folder, uri), {"name": "", "version": "", "uri": str(folder)}


def _run_reference(run_id: str | None, folder: Path | None, uri: str):
    import logging

    from components.core.eval import ood

    log = logging.getLogger(__name__)
    if folder is not None:
        path = folder / ood.REFERENCE_FILE
        return ood.OodReference.load(path) if path.is_file() else None
    if not run_id:
        log.warning("%s: no training run recorded: no OOD reference", uri)
        return None
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{ood.ARTIFACT_DIR}/{ood.REFERENCE_FILE}")
    except Exception as err:  # an older run without one: serve without OOD scores, and say so
        log.warning("%s: no OOD reference in run %s (%s): predictions carry no OOD score", uri, run_id,
                    type(err).__name__)
        return None
    return ood.OodReference.load(local)


def _load(uri: str) -> ModelBundle:
    m = _MODELS_URI.match(uri)
    if m:
        name, alias, version = m["name"], m["alias"], m["version"]
        mv = version_by_alias(name, alias) if alias else get_version(name, version)
        if mv is None:
            raise CxrError(f"{uri}: model {name} has no alias {alias!r} (see `cxr promote`, `cxr register`)")
        model = models.load_model(_find_keras_file(_download(f"models:/{name}/{mv.version}")))
        tags = dict(mv.tags or {})
        if not tags.get("resize") and getattr(mv, "run_id", None):  # a version registered without it: its run's
            tags["resize"] = _run_tags(mv.run_id).get("resize", "")
        metrics = {k.removeprefix("metric."): _num(v) for k, v in tags.items() if k.startswith("metric.")}
        return _bundle(model, tags, name=name, version=str(mv.version), alias=alias or "", uri=uri, metrics=metrics,
                       model_card=mv.description or "")
    if uri.startswith("runs:/"):
        run_id = uri.split("/")[1]
        model = models.load_model(_find_keras_file(_download(uri)))
        return _bundle(model, client().get_run(run_id).data.tags, uri=uri)
    path = Path(uri)
    file = path / "model.keras" if path.is_dir() else path
    model = models.load_model(file)
    tags = _local_tags(file.parent / "train_summary.json", model)
    thresholds_file = file.parent / "thresholds.json"
    if thresholds_file.is_file():  # optional: {"PNEUMONIA": 0.31, ...} next to a local model
        tags["operating_points"] = thresholds_file.read_text()
    return _bundle(model, tags, uri=str(file))


def _run_tags(run_id: str) -> dict[str, str]:
    try:
        return dict(client().get_run(run_id).data.tags)
    except Exception:  # the run was deleted: the version's own tags are all there is
        return {}


def _local_tags(summary_file: Path, model) -> dict[str, str]:
    """What a model folder's ``train_summary.json`` says about the model: its classes and the preprocessing
    it was trained with (``resize``), in the form of registry tags."""
    if not summary_file.is_file():
        log.warning("%s not found: class names unknown, resize assumed 'pad'", summary_file)
        return {}
    summary = read_json(summary_file)
    size = summary.get("image_size")
    if size is not None and int(size) != models.model_image_size(model):
        raise CxrError(f"{summary_file} says image_size {size} but the model next to it takes "
                       f"{models.model_image_size(model)} px: the folder mixes two trainings")
    tags = {"classes": json.dumps(summary["classes"])} if summary.get("classes") else {}
    if summary.get("resize"):
        tags["resize"] = str(summary["resize"])
    else:
        log.warning("%s has no 'resize' (trained by an older version): assuming 'pad'", summary_file)
    return tags


def _num(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def _bundle(model, tags: dict[str, str], **info) -> ModelBundle:
    n_out = int(model.output.shape[-1])
    classes = json.loads(tags["classes"]) if tags.get("classes") else [f"class_{i}" for i in range(n_out)]
    if len(classes) != n_out:
        raise CxrError(f"model {info.get('uri')} has {n_out} outputs but its tags list classes {classes}")
    thresholds = {c: float(t) for c, t in json.loads(tags.get("operating_points") or "{}").items()}
    resize = tags.get("resize") or "pad"
    if resize not in RESIZE_MODES:
        raise CxrError(f"model {info.get('uri')}: its 'resize' is {resize!r}, expected one of {RESIZE_MODES}")
    return ModelBundle(model=model, classes=classes, image_size=models.model_image_size(model),
                       resize=resize, thresholds=thresholds, **info)
