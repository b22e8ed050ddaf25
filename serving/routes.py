"""The API's routes: predictions (``/predict``, ``/feedback``) and information about the service (``/``,
``/health``, ``/metrics``, ``/model``, ``/model/card``). The work is in :class:`serving.service.Service`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, HTMLResponse

from serving.metrics import CONTENT_TYPE
from serving.service import Feedback, Service, auth, new_request_id, service

STATIC = Path(__file__).parent / "static"

predictions = APIRouter()
info = APIRouter()


@predictions.post("/predict", dependencies=[Depends(auth)])
def predict(request: Request, response: Response, file: Annotated[UploadFile, File()],
            svc: Annotated[Service, Depends(service)], gradcam_png: Annotated[bool, Query(alias="gradcam")] = False):
    request_id = new_request_id()
    response.headers["X-Request-ID"] = request_id
    request.state.model_version = svc.holder.current.version
    body, bundle = svc.predict(file.file.read(svc.settings.max_bytes + 1), request_id, gradcam_png)
    request.state.model_version = bundle.version
    return body


@predictions.post("/feedback", dependencies=[Depends(auth)])
def feedback(fb: Feedback, svc: Annotated[Service, Depends(service)]):
    bundle = svc.holder.current
    if svc.prediction_log is None:
        raise HTTPException(409, {"error": "prediction_log_off",
                                  "detail": "the prediction log is off (set CXR_PREDICTION_LOG): nothing to label"})
    if fb.label not in bundle.classes:
        raise HTTPException(422, {"error": "unknown_label",
                                  "detail": f"label must be one of {bundle.classes}, got {fb.label[:64]!r}"})
    seen = svc.recent.get(fb.request_id)
    svc.prediction_log.append({"type": "feedback", "request_id": fb.request_id, "label": fb.label})
    agrees = "unknown" if seen is None else str(seen[1] == fb.label).lower()
    svc.metrics.feedback.labels(seen[0] if seen else "unknown", agrees).inc()
    return {"request_id": fb.request_id, "label": fb.label, "recorded": True,
            "prediction": ({"model_version": seen[0], "label": seen[1]} if seen else None)}


@info.get("/", include_in_schema=False)
def page():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@info.get("/health")
def health(svc: Annotated[Service, Depends(service)]):
    bundle = svc.holder.current
    return {"status": "ok", "model": {"name": bundle.name, "version": bundle.version, "alias": bundle.alias}}


@info.get("/metrics", include_in_schema=False)
def prometheus_metrics(svc: Annotated[Service, Depends(service)]):
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


@info.get("/model", dependencies=[Depends(auth)])
def model_info(svc: Annotated[Service, Depends(service)]):
    return svc.holder.current.describe()


@info.get("/model/card", dependencies=[Depends(auth)])
def model_card(svc: Annotated[Service, Depends(service)]):
    from components.core.registry.modelcard import to_html

    bundle = svc.holder.current
    if not bundle.model_card:
        raise HTTPException(404, {"error": "no_model_card", "detail": "this model has no model card"})
    return HTMLResponse(to_html(bundle.model_card, f"Model card: {bundle.name}"))
