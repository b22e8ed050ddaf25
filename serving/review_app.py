"""The label-review page (``cxr review-labels serve``): a person decides on the suspects of the last review, one
patient at a time, and each decision is a confirmed line of ``data/label_overrides.csv`` at once
(:class:`serving.review_state.ReviewSession`).

``GET /`` the page (static, no data); ``GET /api/state``; ``GET /api/item/{i}`` (the film, Grad-CAM for the
given and the suggested class, the out-of-fold probabilities, the patient's other images, as data URIs);
``POST /api/decide`` ``{"index", "action": keep|relabel|exclude, "label", "note"}``; ``POST /api/undo``.

**Where it listens.** 127.0.0.1 by default. Elsewhere it needs ``CXR_API_TOKEN`` (the API's bearer token,
:func:`serving.service.auth`'s rule) and refuses to start without one: the page writes a file of the repository.
With a token, every ``/api`` route wants ``Authorization: Bearer <token>``; the page asks for it once (or reads
it from the address's ``#token=…``, which the browser never sends) and keeps it for the tab.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from components.core.contract.errors import CxrError, DataError
from serving.review_state import ReviewSession

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("cxr.review")
_bearer = HTTPBearer(auto_error=False)


class Decision(BaseModel):
    index: int = Field(ge=0)
    action: Literal["keep", "relabel", "exclude"]
    label: str = Field("", max_length=64)
    note: str = Field("", max_length=500)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token_off_loopback(host: str, token: str | None) -> None:
    """The API's rule for a server that other machines can reach: a bearer token, or no start."""
    if not is_loopback(host) and not token:
        raise CxrError(f"--host {host}: the review page writes data/label_overrides.csv; beyond 127.0.0.1 it needs "
                       "a bearer token: set CXR_API_TOKEN (as for cxr serve), or keep the default --host 127.0.0.1")


def _session(request: Request) -> ReviewSession:
    return request.app.state.session


def _auth(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    # a decision writes a file of the repository: another web page the reviewer has open must not be able to send
    # one (a cross-site form or no-cors fetch cannot set this content type without a preflight, nor fake Origin)
    if request.method == "POST":
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HTTPException(415, {"error": "unsupported_media_type", "detail": "send the decision as JSON"})
        origin, host = request.headers.get("origin"), request.headers.get("host", "")
        if origin is not None and origin.split("://", 1)[-1] != host:
            raise HTTPException(403, {"error": "cross_origin", "detail": f"requests from {origin} are refused"})
    token = request.app.state.token
    if token is None:
        return
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(401, {"error": "unauthorized", "detail": "a valid bearer token is required"},
                            headers={"WWW-Authenticate": "Bearer"})


api = APIRouter(prefix="/api", dependencies=[Depends(_auth)])
Session = Annotated[ReviewSession, Depends(_session)]


@api.get("/state")
def state(session: Session):
    return session.state()


@api.get("/item/{index}")
def item(index: int, session: Session):
    try:
        return session.item(index)
    except IndexError as err:
        raise HTTPException(404, {"error": "no_such_suspect", "detail": str(err)}) from None


@api.post("/decide")
def decide(d: Decision, session: Session):
    try:
        line = session.decide(d.index, d.action, d.label, d.note)
    except IndexError as err:
        raise HTTPException(404, {"error": "no_such_suspect", "detail": str(err)}) from None
    except DataError as err:
        raise HTTPException(422, {"error": "invalid_decision", "detail": str(err)}) from None
    log.info("%s: %s %s %s (%s)", session.who, line["action"], line["label"], line["path"], line["when"])
    return {"line": line, "next_open": session.next_open(d.index), **session.progress()}


@api.post("/undo")
def undo(session: Session):
    index = session.undo()
    return {"undone": index, **session.progress()}


def create_review_app(session: ReviewSession, token: str | None = None) -> FastAPI:
    app = FastAPI(title="cxr label review", version="1", docs_url=None, redoc_url=None)
    app.state.session, app.state.token = session, token

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "review.html", media_type="text/html")

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):  # e.g. the overrides file was broken by a hand edit
        return JSONResponse({"detail": {"error": "data_error", "detail": str(exc)}}, 409)

    app.include_router(api)
    return app


def serve_review(review_dir: str | Path, raw: str | Path, overrides_path: str | Path, who: str, host: str = "127.0.0.1",
                 port: int = 8001) -> None:
    """Run the page until interrupted (127.0.0.1 by default; elsewhere only with ``CXR_API_TOKEN``)."""
    import uvicorn

    token = os.environ.get("CXR_API_TOKEN") or None
    require_token_off_loopback(host, token)
    session = ReviewSession(Path(review_dir), Path(raw), Path(overrides_path), who)
    progress = session.progress()
    log.info("label review of %s: %d of %d suspects reviewed; decisions go to %s as %s; open http://%s:%d/",
             review_dir, progress["reviewed"], progress["total"], overrides_path, who, host, port)
    uvicorn.run(create_review_app(session, token), host=host, port=port, log_level="info", access_log=False)
