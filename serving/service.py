"""What the API's routes share: the settings, the model holder, the metrics, the prediction log, and the
prediction itself (decode with validate's limits, infer, decide, OOD, log), apart from HTTP routing."""

from __future__ import annotations

import base64
import collections
import hmac
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from components.core.data.images import (
    DEFAULT_MAX_BYTES,
    OUT_OF_MEMORY,
    ImageError,
    Limits,
    decode_with_facts,
    warning_list,
)
from components.core.data.square import fit_square
from components.core.eval.gradcam import gradcam, overlay, to_png
from components.core.model.bundle import ModelBundle
from serving.follow import ModelHolder
from serving.metrics import ServingMetrics
from serving.predlog import PredictionLog

STATUS_BY_REASON = {"empty_file": 400, "not_an_image": 415, "unsupported_format": 415, "too_large": 413,
                    "too_small": 422, "dicom_unsupported_transfer_syntax": 415, "dicom_unsupported_photometric": 415,
                    "dicom_multiframe": 422, "dicom_no_pixels": 422,
                    "blank_film": 422, "non_finite_pixels": 422}
ENDPOINTS = ("/predict", "/feedback", "/health", "/metrics", "/model", "/model/card", "/")


@dataclass(frozen=True)
class Settings:
    """Server settings. ``min_side``/``max_side``/``max_pixels`` are validate's limits: pass
    ``params.validate_`` to :meth:`from_env` so serving refuses what validate quarantines."""

    max_bytes: int = DEFAULT_MAX_BYTES  # CXR_MAX_UPLOAD_BYTES; cxr predict's limit per file too
    max_pixels: int = Limits.max_pixels
    token: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    min_side: int = Limits.min_side
    max_side: int = Limits.max_side
    max_transparent_share: float = Limits.max_transparent_share
    min_pixel_std: float = Limits.min_pixel_std

    @property
    def limits(self) -> Limits:
        return Limits(self.min_side, self.max_side, self.max_pixels, self.max_transparent_share, self.min_pixel_std,
                      self.max_bytes)

    @classmethod
    def from_env(cls, validate=None) -> Settings:
        """Environment variables over ``validate`` (``params.validate_``) over the defaults."""
        base = Limits.from_config(validate) if validate is not None else Limits()
        origins = tuple(o.strip() for o in os.environ.get("CXR_CORS_ORIGINS", "").split(",") if o.strip())
        return cls(max_bytes=int(os.environ.get("CXR_MAX_UPLOAD_BYTES", cls.max_bytes)),
                   max_pixels=int(os.environ.get("CXR_MAX_PIXELS", base.max_pixels)),
                   min_side=int(os.environ.get("CXR_MIN_SIDE", base.min_side)),
                   max_side=int(os.environ.get("CXR_MAX_SIDE", base.max_side)),
                   max_transparent_share=base.max_transparent_share, min_pixel_std=base.min_pixel_std,
                   token=os.environ.get("CXR_API_TOKEN") or None, cors_origins=origins)


class Feedback(BaseModel):
    """The ground truth for an earlier prediction (its ``request_id``)."""

    request_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    label: str = Field(min_length=1, max_length=64)


class Recent:
    """The last ``size`` predictions (request id → model version, label), for ``/feedback``."""

    def __init__(self, size: int = 10_000) -> None:
        self._items: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def add(self, request_id: str, version: str, label: str) -> None:
        with self._lock:
            self._items[request_id] = (version, label)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> tuple[str, str] | None:
        with self._lock:
            return self._items.get(request_id)


@dataclass
class Service:
    """The state one app serves from (``app.state.service``)."""

    holder: ModelHolder
    settings: Settings
    metrics: ServingMetrics
    prediction_log: PredictionLog | None = None
    # one model call at a time: predictable memory on small machines
    lock: threading.Lock = field(default_factory=threading.Lock)
    recent: Recent = field(default_factory=Recent)

    def predict(self, data: bytes, request_id: str, with_gradcam: bool = False) -> tuple[dict, ModelBundle]:
        """The response body for one uploaded image (raises HTTPException for an image we refuse)."""
        started = time.perf_counter()
        bundle = self.holder.current  # this request's model, whatever a swap does meanwhile
        if len(data) > self.settings.max_bytes:
            raise HTTPException(413, {"error": "too_large",
                                      "detail": f"upload larger than {self.settings.max_bytes} bytes"})
        try:
            gray, facts = decode_with_facts(data, self.settings.max_pixels, limits=self.settings.limits)
            pixels = fit_square(gray, bundle.image_size, bundle.resize)
        except ImageError as err:  # details name limits and tags, never DICOM values (see dicom.py)
            body = {"error": err.reason, "detail": err.detail} | ({"limit": err.limit} if err.limit else {})
            raise HTTPException(STATUS_BY_REASON.get(err.reason, 422), body) from None
        except MemoryError:
            raise HTTPException(503, {"error": "out_of_memory", "detail": OUT_OF_MEMORY}) from None
        warnings = warning_list(facts)  # what was used anyway, as cxr predict's note says it
        x = pixels[None, ..., None]
        with self.lock:
            probs, scores = bundle.infer_ood(x)
            heat = gradcam(bundle.model, x)[0] if with_gradcam else None
        probs = probs[0]
        score = float(scores[0]) if scores is not None else None
        flagged = bundle.ood.flag(score) if score is not None else None
        label = bundle.classes[int(np.argmax(probs))]
        decision = bundle.decide(probs)
        version = {"name": bundle.name, "version": bundle.version, "alias": bundle.alias}
        body = {
            "request_id": request_id,
            "label": label,
            "probabilities": {c: round(float(p), 6) for c, p in zip(bundle.classes, probs, strict=True)},
            "decision": decision,  # calibrated probability >= the class's operating threshold
            "thresholds": bundle.thresholds,
            "ood_score": round(score, 4) if score is not None else None,
            "unlike_training_data": flagged,
            "ood": ood_part(bundle, score),
            "model": version,
            "warnings": warnings,
        }
        if heat is not None:
            body["gradcam_png"] = base64.b64encode(to_png(overlay(pixels, heat))).decode()
        ref = bundle.ood
        self.metrics.observe_prediction(bundle.version, label, flagged,
                                        score / ref.threshold if score is not None and ref.threshold else None)
        self.recent.add(request_id, bundle.version, label)
        if self.prediction_log is not None:
            self._log({"type": "prediction", "request_id": request_id, "model": version, "label": label,
                       "probabilities": body["probabilities"], "decision": decision, "ood_score": body["ood_score"],
                       "ood_threshold": round(ref.threshold, 4) if ref is not None else None,
                       "unlike_training_data": flagged, "warnings": warnings,
                       "image": {"width": int(gray.shape[1]), "height": int(gray.shape[0]),
                                 "mean": round(float(pixels.mean()), 3), "std": round(float(pixels.std()), 3)},
                       "latency_ms": round(1000 * (time.perf_counter() - started), 2)})
        return body, bundle

    def _log(self, record: dict) -> None:
        import logging

        try:  # availability first: a full disk must not stop predictions (counted and logged instead)
            self.prediction_log.append(record)
        except OSError as err:
            self.metrics.log_errors.inc()
            logging.getLogger("cxr.serve").error("prediction log: cannot append %s: %s", record["request_id"], err)


def ood_part(bundle: ModelBundle, score: float | None) -> dict | None:
    if score is None or bundle.ood is None:
        return None
    ref = bundle.ood
    return {"score": round(score, 4), "threshold": round(ref.threshold, 4), "false_alarm": ref.false_alarm,
            "percentile": round(ref.percentile(score), 4), "method": ref.method}


def new_request_id() -> str:
    return uuid.uuid4().hex


def service(request: Request) -> Service:
    """The route dependency that gives the app's :class:`Service`."""
    return request.app.state.service


_bearer = HTTPBearer(auto_error=False)


def auth(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Bearer-token check for ``/predict``, ``/feedback`` and ``/model`` when ``CXR_API_TOKEN`` is set."""
    token = request.app.state.service.settings.token
    if token is None:
        return
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(401, {"error": "unauthorized", "detail": "a valid bearer token is required"},
                            headers={"WWW-Authenticate": "Bearer"})
