"""MLflow model registry: resolve model URIs, load models safely, read aliases and gate tags.

The registry is the single source of truth: a version carries its gate result and metrics as
tags at creation, ``challenger`` points at the latest version that passed its gate, ``champion``
at the one in service, ``previous-champion`` at the one before.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from components.core.contract.errors import CxrError, ServiceError
from components.core.model import models
from components.core.model.bundle import ModelBundle

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
GATE_TAG = "gate_passed"


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


def _from_mlflow(uri: str) -> tuple[Any, models.Preprocessing]:
    """The Keras model and its preprocessing record (the MLmodel metadata) of an MLflow model URI."""
    local = _download(uri)
    return models.load_model(_find_keras_file(local)), models.Preprocessing.from_mlmodel(local, uri)


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
    The bundle knows its classes and the preprocessing its model was trained with (``resize``) from the record
    stored with the model (:class:`~components.core.model.models.Preprocessing`), never from a default.
    """
    bundle = _load(uri)
    bundle.ood = load_reference(bundle)
    if bundle.ood is not None and bundle.ood.means.shape[0] != len(bundle.classes):
        raise CxrError(f"{uri}: the OOD reference has {bundle.ood.means.shape[0]} classes, the model "
                       f"{len(bundle.classes)}")
    return bundle


def load_reference(bundle: ModelBundle):
    """The bundle's :class:`~components.core.model.ood.OodReference`, or None (a model trained before it existed)."""
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

    from components.core.model import ood

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
        model, prep = _from_mlflow(f"models:/{name}/{mv.version}")
        tags = dict(mv.tags or {})
        metrics = {k.removeprefix("metric."): _num(v) for k, v in tags.items() if k.startswith("metric.")}
        return _bundle(model, prep, tags, name=name, version=str(mv.version), alias=alias or "", uri=uri,
                       metrics=metrics, model_card=mv.description or "")
    if uri.startswith("runs:/"):
        run_id = uri.split("/")[1]
        model, prep = _from_mlflow(uri)
        return _bundle(model, prep, client().get_run(run_id).data.tags, uri=uri)
    path = Path(uri)
    file = path / "model.keras" if path.is_dir() else path
    model = models.load_model(file)
    prep = models.Preprocessing.load(file.parent)
    tags = {}
    thresholds_file = file.parent / "thresholds.json"
    if thresholds_file.is_file():  # optional: {"PNEUMONIA": 0.31, ...} next to a local model
        tags["operating_points"] = thresholds_file.read_text()
    return _bundle(model, prep, tags, uri=str(file))


def _num(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def _bundle(model, prep: models.Preprocessing, tags: dict[str, str], **info) -> ModelBundle:
    n_out = int(model.output.shape[-1])
    if len(prep.classes) != n_out:
        raise CxrError(f"model {info.get('uri')} has {n_out} outputs but its preprocessing record lists classes "
                       f"{list(prep.classes)}")
    thresholds = {c: float(t) for c, t in json.loads(tags.get("operating_points") or "{}").items()}
    return ModelBundle(model=model, classes=list(prep.classes), image_size=models.model_image_size(model),
                       resize=prep.resize, thresholds=thresholds, **info)
