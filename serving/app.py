"""The REST API and its web page (FastAPI).

``POST /predict`` (multipart ``file``; ``?gradcam=true`` adds a heat-map overlay as base64 PNG),
``GET /health``, ``GET /model``, ``GET /`` (an upload page). Uploads are limited in bytes and type
(checked by magic bytes) and go through the decoder validate uses, with validate's limits (min/max
side, max pixels: :class:`Settings`, from ``params.validate`` via ``Settings.from_env(validate)``);
errors are 4xx JSON ``{"error": code, "detail": text, "limit": param}`` without stack traces, where
``limit`` names the refusing setting (``validate.min_side``…) or is absent. DICOM uploads are
accepted; nothing from a DICOM header (patient name, id, dates…) is echoed in any response or error.
Optional bearer-token auth for ``/predict`` and ``/model`` (``CXR_API_TOKEN``); CORS is off unless ``CXR_CORS_ORIGINS``.
"""


import base64
import hmac
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from components.core.gradcam import gradcam, overlay, to_png
from components.core.images import ImageError, Limits, load_for_model
from components.core.registry import ModelBundle

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


def create_app(bundle: ModelBundle, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(title="cxr-mlops", version="1", docs_url="/docs", redoc_url=None)
    lock = threading.Lock()  # one model call at a time: predictable memory on small machines
    bundle.infer(np.zeros((1, bundle.image_size, bundle.image_size, 1), np.uint8))  # compile before serving
    bearer = HTTPBearer(auto_error=False)

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
            return JSONResponse({"detail": {"error": "too_large",
                                            "detail": f"upload larger than {settings.max_bytes} bytes"}}, 413)
        return await call_next(request)

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

        from components.core.modelcard import to_html

        if not bundle.model_card:
            raise HTTPException(404, {"error": "no_model_card", "detail": "this model has no model card"})
        return HTMLResponse(to_html(bundle.model_card, f"Model card: {bundle.name}"))

    @app.get("/health")
    def health():
        return {"status": "ok", "model": {"name": bundle.name, "version": bundle.version, "alias": bundle.alias}}

    @app.get("/model", dependencies=[Depends(auth)])
    def model_info():
        return bundle.describe()

    @app.post("/predict", dependencies=[Depends(auth)])
    def predict(file: Annotated[UploadFile, File()], gradcam_png: Annotated[bool, Query(alias="gradcam")] = False):
        data = file.file.read(settings.max_bytes + 1)
        if len(data) > settings.max_bytes:
            raise HTTPException(413, {"error": "too_large", "detail": f"upload larger than {settings.max_bytes} bytes"})
        try:
            pixels = load_for_model(data, bundle.image_size, bundle.resize, settings.max_pixels,
                                    limits=settings.limits)
        except ImageError as err:  # details name limits and tags, never DICOM values (see dicom.py)
            body = {"error": err.reason, "detail": err.detail} | ({"limit": err.limit} if err.limit else {})
            raise HTTPException(STATUS_BY_REASON.get(err.reason, 422), body) from None
        x = pixels[None, ..., None]
        with lock:
            probs = bundle.infer(x)[0]
            heat = gradcam(bundle.model, x)[0] if gradcam_png else None
        body = {
            "label": bundle.classes[int(np.argmax(probs))],
            "probabilities": {c: round(float(p), 6) for c, p in zip(bundle.classes, probs, strict=True)},
            "decision": bundle.decide(probs),  # calibrated probability >= the class's operating threshold
            "thresholds": bundle.thresholds,
            "model": {"name": bundle.name, "version": bundle.version, "alias": bundle.alias},
        }
        if heat is not None:
            body["gradcam_png"] = base64.b64encode(to_png(overlay(pixels, heat))).decode()
        return body

    return app


def serve(bundle: ModelBundle, host: str, port: int, settings: Settings | None = None) -> None:
    """Run the API; pass ``Settings.from_env(params.validate_)`` to apply validate's limits."""
    import uvicorn

    uvicorn.run(create_app(bundle, settings), host=host, port=port, log_level="info", access_log=True)
