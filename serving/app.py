"""The REST API and its web page (FastAPI).

``POST /predict`` (multipart ``file``; ``?gradcam=true`` adds a heat-map overlay as base64 PNG),
``GET /health``, ``GET /model``, ``GET /`` (an upload page). Uploads are limited in bytes and type
(checked by magic bytes) and go through the decoder validate uses, with validate's limits (min/max
side, max pixels: :class:`Settings`, from ``params.validate`` via ``Settings.from_env(validate)``);
errors are 4xx JSON ``{"error": code, "detail": text, "limit": param}`` without stack traces, where
``limit`` names the refusing setting (``validate.min_side``…) or is absent. A prediction's JSON carries
``warnings``: what the decoder used anyway (``multi_frame: 3 frames, frame 0 used``), the list whose items
``cxr predict`` writes in its ``note`` column. DICOM uploads are
accepted; nothing from a DICOM header (patient name, id, dates…) is echoed in any response or error.
Optional bearer-token auth for ``/predict``, ``/feedback`` and ``/model`` (``CXR_API_TOKEN``); CORS is off unless
``CXR_CORS_ORIGINS``.

Issue 16, closing the loop:

* every prediction carries ``request_id``, an out-of-distribution score ``ood_score`` and the flag
  ``unlike_training_data`` (score above the threshold chosen on the validation split,
  :mod:`components.core.model.ood`; both None for a model without a reference), and the page shows the warning;
* ``GET /metrics``: Prometheus metrics (:mod:`serving.metrics`), open like ``/health`` (counts only, no
  image data; the cluster's NetworkPolicy lets only Prometheus and the ingress reach the pods);
* every prediction is appended, without pixel data, to the prediction log (:mod:`serving.predlog`,
  ``CXR_PREDICTION_LOG``), and ``POST /feedback {"request_id", "label"}`` records the ground truth later;
* the model lives in a :class:`~serving.follow.ModelHolder`: ``cxr serve --follow-alias champion``
  hot-swaps it when the registry alias moves, and each response names the version that answered.

Layout: this module assembles the app (middleware, error handlers, the lifespan that warms the model up and
releases what the service holds); the routes are in :mod:`serving.routes`, the shared state and the
prediction itself in :mod:`serving.service`.
"""



from __future__ import annotations

import contextlib
import logging
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from components.core.model.bundle import ModelBundle
from serving import routes
from serving.follow import AliasFollower, ModelHolder, warm_up
from serving.metrics import ServingMetrics
from serving.predlog import PredictionLog
from serving.service import ENDPOINTS, Service, Settings

__all__ = ["Settings", "create_app", "serve"]
log = logging.getLogger("cxr.serve")


def create_app(model: ModelBundle | ModelHolder, settings: Settings | None = None,
               prediction_log: PredictionLog | None = None, metrics: ServingMetrics | None = None,
               follower: AliasFollower | None = None) -> FastAPI:
    """The API for a bundle, or for a :class:`ModelHolder` whose model may be swapped while it serves
    (``follower`` moves it: started and stopped with the app)."""
    holder = model if isinstance(model, ModelHolder) else ModelHolder(model)
    svc = Service(holder, settings or Settings.from_env(), metrics or ServingMetrics(), prediction_log)
    previous_hook = holder.on_swap

    def on_swap(b: ModelBundle) -> None:
        svc.metrics.set_model(b)
        svc.metrics.swaps.labels("ok").inc()
        if previous_hook:
            previous_hook(b)

    holder.on_swap = on_swap
    svc.metrics.set_model(holder.current)
    warm_up(holder.current)  # compile before the first request, also when the app is used without its lifespan

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if follower is not None:
            follower.start()
        try:
            yield
        finally:  # after uvicorn drained the requests in flight
            if follower is not None:
                follower.stop()
            if svc.prediction_log is not None:
                svc.prediction_log.close()

    app = FastAPI(title="cxr-mlops", version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.service = svc
    app.state.holder, app.state.metrics, app.state.prediction_log = holder, svc.metrics, prediction_log
    if svc.settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(svc.settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    _add_middleware(app, svc)
    _add_error_handlers(app)
    app.include_router(routes.info)
    app.include_router(routes.predictions)
    return app


def _add_middleware(app: FastAPI, svc: Service) -> None:
    max_bytes = svc.settings.max_bytes

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.url.path == "/predict" and length and length.isdigit() and int(length) > max_bytes + 64 * 1024:
            request.state.error = "too_large"
            return JSONResponse({"detail": {"error": "too_large", "detail": f"upload larger than {max_bytes} bytes"}},
                                413)
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
            svc.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            version = getattr(request.state, "model_version", None) or svc.holder.current.version
            svc.metrics.requests.labels(endpoint, request.method, str(code), version).inc()
            if code >= 400:
                svc.metrics.errors.labels(endpoint, str(code),
                                          getattr(request.state, "error", None) or str(code)).inc()
        return response


def _add_error_handlers(app: FastAPI) -> None:
    """4xx/5xx as JSON ``{"detail": {"error", "detail"}}``, never a stack trace; the error code is counted."""

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


def serve(bundle: ModelBundle, host: str, port: int, settings: Settings | None = None, follow_alias: str | None = None,
          poll_seconds: float = 30.0, prediction_log: PredictionLog | None = None) -> None:
    """Run the API; pass ``Settings.from_env(params.validate_)`` to apply validate's limits. With
    ``follow_alias``, poll the registry every ``poll_seconds`` and hot-swap the model when the alias moves."""
    import uvicorn

    holder = ModelHolder(bundle)
    metrics = ServingMetrics()
    follower = None
    if follow_alias:
        follower = AliasFollower(holder, bundle.name, follow_alias, poll_seconds,
                                 on_failure=lambda err: metrics.swaps.labels("failed").inc())
    app = create_app(holder, settings, prediction_log or PredictionLog.from_env(), metrics, follower)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)
