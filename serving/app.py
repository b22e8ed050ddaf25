"""The REST API and its web page (FastAPI).

``POST /predict`` (multipart ``file``; ``?gradcam=true`` adds a heat-map overlay as base64 PNG),
``GET /health``, ``GET /model``, ``GET /`` (an upload page). Uploads are limited in bytes and type
(checked by magic bytes) and go through the decoder validate uses, with validate's limits (min/max
side, max pixels: :class:`Settings`, from ``params.validate`` via ``Settings.from_env(validate)``);
errors are 4xx JSON ``{"error": code, "detail": text, "limit": param}`` without stack traces, where
``limit`` names the refusing setting (``validate.min_side``…) or is absent. DICOM uploads are
accepted; nothing from a DICOM header (patient name, id, dates…) is echoed in any response or error.
Optional bearer-token auth for ``/predict``, ``/feedback`` and ``/model`` (``CXR_API_TOKEN``); CORS is off unless
``CXR_CORS_ORIGINS``.

Issue 16, closing the loop:

* every prediction carries ``request_id``, an out-of-distribution score ``ood_score`` and the flag
  ``unlike_training_data`` (score above the threshold chosen on the validation split,
  :mod:`components.core.eval.ood`; both None for a model without a reference), and the page shows the warning;
* ``GET /metrics``: Prometheus metrics (:mod:`serving.metrics`), open like ``/health`` (counts only, no
  image data; the cluster's NetworkPolicy lets only Prometheus and the ingress reach the pods);
* every prediction is appended, without pixel data, to the prediction log (:mod:`serving.predlog`,
  ``CXR_PREDICTION_LOG``), and ``POST /feedback {"request_id", "label"}`` records the ground truth later;
* the model lives in a :class:`~serving.follow.ModelHolder`: ``cxr serve --follow-alias champion``
  hot-swaps it when the registry alias moves, and each response names the version that answered.
"""


import base64
import collections
import hmac
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from components.core.data.images import ImageError, Limits, decode_gray, fit_square
from components.core.eval.gradcam import gradcam, overlay, to_png
from components.core.registry.registry import ModelBundle
from serving.follow import AliasFollower, ModelHolder, warm_up
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.predlog import PredictionLog

log = logging.getLogger("cxr.serve")
STATIC = Path(__file__).parent / "static"
STATUS_BY_REASON = {"empty_file": 400, "not_an_image": 415, "unsupported_format": 415, "too_large": 413,
                    "too_small": 422, "dicom_unsupported_transfer_syntax": 415, "dicom_unsupported_photometric": 415,
                    "dicom_multiframe": 422, "dicom_no_pixels": 422}


@dataclass(frozen=True)
class Settings:
    """Server settings. ``min_side``/``max_side``/``max_pixels`` are validate's limits: pass
    ``params.validate_`` to :meth:`from_env` so serving refuses what validate quarantines."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = Limits.max_pixels
    token: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    min_side: int = Limits.min_side
    max_side: int = Limits.max_side

    @property
    def limits(self) -> Limits:
        return Limits(self.min_side, self.max_side, self.max_pixels)

    @classmethod
    def from_env(cls, validate=None) -> "Settings":
        """Environment variables over ``validate`` (``params.validate_``) over the defaults."""
        base = Limits.from_config(validate) if validate is not None else Limits()
        origins = tuple(o.strip() for o in os.environ.get("CXR_CORS_ORIGINS", "").split(",") if o.strip())
        return cls(max_bytes=int(os.environ.get("CXR_MAX_UPLOAD_BYTES", cls.max_bytes)),
                   max_pixels=int(os.environ.get("CXR_MAX_PIXELS", base.max_pixels)),
                   min_side=int(os.environ.get("CXR_MIN_SIDE", base.min_side)),
                   max_side=int(os.environ.get("CXR_MAX_SIDE", base.max_side)),
                   token=os.environ.get("CXR_API_TOKEN") or None, cors_origins=origins)


ENDPOINTS = ("/predict", "/feedback", "/health", "/metrics", "/model", "/model/card", "/")


class Feedback(BaseModel):
    """The ground truth for an earlier prediction (its ``request_id``)."""

    request_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    label: str = Field(min_length=1, max_length=64)


def _ood_part(bundle: ModelBundle, score: float | None) -> dict | None:
    if score is None or bundle.ood is None:
        return None
    ref = bundle.ood
    return {"score": round(score, 4), "threshold": round(ref.threshold, 4), "false_alarm": ref.false_alarm,
            "percentile": round(ref.percentile(score), 4), "method": ref.method}


def create_app(model: ModelBundle | ModelHolder, settings: Settings | None = None,
               prediction_log: PredictionLog | None = None, metrics: ServingMetrics | None = None) -> FastAPI:
    """The API for a bundle, or for a :class:`ModelHolder` whose model may be swapped while it serves."""
    settings = settings or Settings.from_env()
    metrics = metrics or ServingMetrics()
    holder = model if isinstance(model, ModelHolder) else ModelHolder(model)
    previous_hook = holder.on_swap

    def on_swap(b: ModelBundle) -> None:
        metrics.set_model(b)
        metrics.swaps.labels("ok").inc()
        if previous_hook:
            previous_hook(b)

    holder.on_swap = on_swap
    app = FastAPI(title="cxr-mlops", version="1", docs_url="/docs", redoc_url=None)
    app.state.holder, app.state.metrics, app.state.prediction_log = holder, metrics, prediction_log
    lock = threading.Lock()  # one model call at a time: predictable memory on small machines
    warm_up(holder.current)  # compile before serving
    metrics.set_model(holder.current)
    bearer = HTTPBearer(auto_error=False)
    recent: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()  # request id -> version, label
    recent_lock = threading.Lock()

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    def auth(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.token is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), settings.token.encode()):
            raise HTTPException(401, {"error": "unauthorized", "detail": "a valid bearer token is required"},
                                headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.url.path == "/predict" and length and length.isdigit() and \
                int(length) > settings.max_bytes + 64 * 1024:
            request.state.error = "too_large"
            return JSONResponse({"detail": {"error": "too_large",
                                            "detail": f"upload larger than {settings.max_bytes} bytes"}}, 413)
        return await call_next(request)

    @app.middleware("http")
    async def count(request: Request, call_next):  # outermost: sees every response, even the 413 above
        path = request.url.path
        endpoint = path if path in ENDPOINTS else "other"
        started = time.perf_counter()
        try:
            response = await call_next(request)
            code = response.status_code
        except Exception:
            code, request.state.error = 500, "internal_error"
            raise
        finally:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            version = getattr(request.state, "model_version", None) or holder.current.version
            metrics.requests.labels(endpoint, request.method, str(code), version).inc()
            if code >= 400:
                metrics.errors.labels(endpoint, str(code), getattr(request.state, "error", None) or str(code)).inc()
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        request.state.error = detail.get("error") or ("not_found" if exc.status_code == 404 else str(exc.status_code))
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        request.state.error = "invalid_request"
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": {"error": "internal_error", "detail": "the server failed; see its log"}}, 500)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/model/card", dependencies=[Depends(auth)], include_in_schema=True)
    def model_card():
        from fastapi.responses import HTMLResponse

        from components.core.registry.modelcard import to_html

        bundle = holder.current
        if not bundle.model_card:
            raise HTTPException(404, {"error": "no_model_card", "detail": "this model has no model card"})
        return HTMLResponse(to_html(bundle.model_card, f"Model card: {bundle.name}"))

    @app.get("/health")
    def health():
        bundle = holder.current
        return {"status": "ok", "model": {"name": bundle.name, "version": bundle.version, "alias": bundle.alias}}

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/model", dependencies=[Depends(auth)])
    def model_info():
        return holder.current.describe()

    @app.post("/predict", dependencies=[Depends(auth)])
    def predict(request: Request, response: Response, file: Annotated[UploadFile, File()],
                gradcam_png: Annotated[bool, Query(alias="gradcam")] = False):
        started = time.perf_counter()
        bundle = holder.current  # this request's model, whatever a swap does meanwhile
        request.state.model_version = bundle.version
        request_id = uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        data = file.file.read(settings.max_bytes + 1)
        if len(data) > settings.max_bytes:
            raise HTTPException(413, {"error": "too_large", "detail": f"upload larger than {settings.max_bytes} bytes"})
        try:
            gray = decode_gray(data, settings.max_pixels, limits=settings.limits)
            pixels = fit_square(gray, bundle.image_size, bundle.resize)
        except ImageError as err:  # details name limits and tags, never DICOM values (see dicom.py)
            body = {"error": err.reason, "detail": err.detail} | ({"limit": err.limit} if err.limit else {})
            raise HTTPException(STATUS_BY_REASON.get(err.reason, 422), body) from None
        x = pixels[None, ..., None]
        with lock:
            probs, scores = bundle.infer_ood(x)
            heat = gradcam(bundle.model, x)[0] if gradcam_png else None
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
            "ood": _ood_part(bundle, score),
            "model": version,
        }
        if heat is not None:
            body["gradcam_png"] = base64.b64encode(to_png(overlay(pixels, heat))).decode()
        metrics.observe_prediction(bundle.version, label, flagged,
                                   score / bundle.ood.threshold if score is not None and bundle.ood.threshold else None)
        with recent_lock:
            recent[request_id] = (bundle.version, label)
            while len(recent) > 10_000:
                recent.popitem(last=False)
        if prediction_log is not None:
            record = {"type": "prediction", "request_id": request_id, "model": version, "label": label,
                      "probabilities": body["probabilities"], "decision": decision, "ood_score": body["ood_score"],
                      "ood_threshold": round(bundle.ood.threshold, 4) if bundle.ood is not None else None,
                      "unlike_training_data": flagged,
                      "image": {"width": int(gray.shape[1]), "height": int(gray.shape[0]),
                                "mean": round(float(pixels.mean()), 3), "std": round(float(pixels.std()), 3)},
                      "latency_ms": round(1000 * (time.perf_counter() - started), 2)}
            try:  # availability first: a full disk must not stop predictions (counted and logged instead)
                prediction_log.append(record)
            except OSError as err:
                metrics.log_errors.inc()
                log.error("prediction log: cannot append %s: %s", request_id, err)
        return body

    @app.post("/feedback", dependencies=[Depends(auth)])
    def feedback(request: Request, fb: Feedback):
        bundle = holder.current
        if prediction_log is None:
            raise HTTPException(409, {"error": "prediction_log_off",
                                      "detail": "the prediction log is off (set CXR_PREDICTION_LOG): nothing to label"})
        if fb.label not in bundle.classes:
            raise HTTPException(422, {"error": "unknown_label",
                                      "detail": f"label must be one of {bundle.classes}, got {fb.label[:64]!r}"})
        with recent_lock:
            seen = recent.get(fb.request_id)
        prediction_log.append({"type": "feedback", "request_id": fb.request_id, "label": fb.label})
        agrees = "unknown" if seen is None else str(seen[1] == fb.label).lower()
        metrics.feedback.labels(seen[0] if seen else "unknown", agrees).inc()
        return {"request_id": fb.request_id, "label": fb.label, "recorded": True,
                "prediction": ({"model_version": seen[0], "label": seen[1]} if seen else None)}

    return app


def serve(bundle: ModelBundle, host: str, port: int, settings: Settings | None = None, follow_alias: str | None = None,
          poll_seconds: float = 30.0, prediction_log: PredictionLog | None = None) -> None:
    """Run the API; pass ``Settings.from_env(params.validate_)`` to apply validate's limits. With
    ``follow_alias``, poll the registry every ``poll_seconds`` and hot-swap the model when the alias moves."""
    import uvicorn

    holder = ModelHolder(bundle)
    app = create_app(holder, settings, prediction_log or PredictionLog.from_env())
    follower = None
    if follow_alias:
        metrics = app.state.metrics
        follower = AliasFollower(holder, bundle.name, follow_alias, poll_seconds,
                                 on_failure=lambda err: metrics.swaps.labels("failed").inc())
        follower.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)
    finally:
        if follower:
            follower.stop()
        if app.state.prediction_log is not None:
            app.state.prediction_log.close()
