"""The label-review page's API in-process (FastAPI TestClient) over real ingested demo films and a review folder
laid out as `cxr review-labels` writes it (the review itself runs in tests/components/test_review_labels.py and,
with this page in Chromium, in tests/serving/test_review_browser.py): the queue one patient at a time, decisions
as confirmed lines, undo, progress, the token rule."""

import base64
import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from components import ingest
from components.core.contract.errors import CxrError
from components.core.data import manifest, overrides
from components.core.eval.label_review import SUSPECT_COLUMNS
from serving.review_app import create_review_app, require_token_off_loopback
from serving.review_state import ReviewSession
from tests.support import tiny_params

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    ingest.run(tiny_params(), out)
    return out


def review_folder(raw, tmp_path):
    """Suspects: the films of the first two patients with two films, then two single films (rank order mixes the
    patients, so the queue must regroup them)."""
    m = manifest.read(raw / "manifest.csv")
    counts = m["patient_id"].value_counts()
    pair_patients = counts[counts == 2].index[:2]
    pairs = [m[m["patient_id"] == p] for p in pair_patients]
    singles = m[m["patient_id"].isin(counts[counts == 1].index)].head(2)
    chosen = pd.concat([pairs[0].iloc[[0]], pairs[1].iloc[[0]], singles.iloc[[0]], pairs[0].iloc[[1]],
                        pairs[1].iloc[[1]], singles.iloc[[1]]])
    rows = []
    for rank, r in enumerate(chosen.itertuples(), start=1):
        given = r.label
        other = next(c for c in CLASSES if c != given)
        rows.append({"path": r.path, "patient_id": r.patient_id, "given_label": given, "suggested_label": other,
                     "score": round(0.01 * rank, 3), "sha256": hashlib.sha256((raw / r.path).read_bytes()).hexdigest(),
                     "rank": rank, "split": "train", "fold": rank % 2, "p_suggested": 0.9})
    out = tmp_path / "review"
    out.mkdir()
    pd.DataFrame(rows, columns=SUSPECT_COLUMNS).to_csv(out / "suspects.csv", index=False)
    probs = pd.DataFrame({"path": m["path"], "given_label": m["label"], "fold": 0,
                          **{f"p_{c}": 1 / 3 for c in CLASSES}})
    probs.to_csv(out / "pred_probs.csv", index=False)
    maps = np.random.default_rng(0).integers(0, 256, (len(rows), 2, 32, 32), dtype=np.uint8)
    np.savez(out / "cams.npz", path=np.array([r["path"] for r in rows]), maps=maps)
    (out / "summary.json").write_text(json.dumps({"enabled": True, "classes": CLASSES, "resize": "crop",
                                                  "images": len(m), "suspects": len(rows)}))
    return out, rows


@pytest.fixture
def setup(raw, tmp_path):
    review, rows = review_folder(raw, tmp_path)
    decisions = tmp_path / "label_overrides.csv"
    decisions.write_text(",".join(overrides.COLUMNS) + "\n")
    session = ReviewSession(review, raw, decisions, "Dr Test")
    return session, rows, decisions


def png_size(uri: str) -> tuple[int, int]:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


def test_the_queue_is_one_patient_at_a_time_with_everything_a_person_needs(setup):
    session, rows, _ = setup
    c = TestClient(create_review_app(session))
    assert c.get("/").status_code == 200 and "Label review" in c.get("/").text
    state = c.get("/api/state").json()
    assert (state["reviewed"], state["total"], state["first"], state["who"]) == (0, 6, 0, "Dr Test")
    order = [c.get(f"/api/item/{i}").json() for i in range(6)]
    # ranks 1, 4 (patient A), 2, 5 (patient B), 3, 6: a patient's suspects together, patients by their best rank
    assert [o["rank"] for o in order] == [1, 4, 2, 5, 3, 6]
    first = order[0]
    assert first["patient_suspects"] == [0, 1] and first["patient_position"] == 1
    assert max(png_size(first["film"])) <= 512 and png_size(first["cam_suggested"]) == (320, 320)
    assert png_size(first["cam_given"]) == (320, 320)
    assert set(first["probabilities"]) == set(CLASSES) and first["given"] == rows[0]["given_label"]
    (sibling,) = first["others"]  # the patient's other film, a suspect too: the page links it
    assert sibling["path"] == rows[3]["path"] and sibling["suspect"] == 1 and png_size(sibling["image"])
    assert c.get("/api/item/6").status_code == 404


def test_decisions_are_confirmed_lines_at_once_and_undo_restores_them(setup):
    session, rows, decisions = setup
    proposal = {"sha256": rows[1]["sha256"], "action": "relabel", "label": rows[1]["suggested_label"],
                "status": "proposed", "who": overrides.PROPOSER, "when": "", "why": "review: rank 2",
                "path": rows[1]["path"]}
    overrides.write(decisions, pd.DataFrame([proposal]))
    before = decisions.read_text()
    c = TestClient(create_review_app(session))
    r = c.post("/api/decide", json={"index": 0, "action": "keep"}).json()
    assert (r["reviewed"], r["next_open"]) == (1, 1)
    r = c.post("/api/decide", json={"index": 1, "action": "relabel", "label": "PNEUMONIA", "note": "clear lobar"})
    assert r.json()["reviewed"] == 2
    r = c.post("/api/decide", json={"index": 2, "action": "exclude"}).json()
    assert r["reviewed"] == 3
    lines = overrides.read(decisions, CLASSES).set_index("sha256")
    assert len(lines) == 3 and set(lines["status"]) == {"confirmed"} and set(lines["who"]) == {"Dr Test"}
    assert lines.loc[rows[0]["sha256"], "action"] == "keep" and lines.loc[rows[0]["sha256"], "label"] == \
        rows[0]["given_label"]
    assert lines.loc[rows[3]["sha256"], "label"] == "PNEUMONIA" or lines.loc[rows[3]["sha256"], "action"] == "keep"
    assert "clear lobar" in lines.loc[rows[3]["sha256"], "why"]
    assert all(w.endswith("Z") and "T" in w for w in lines["when"])
    assert lines.loc[rows[1]["sha256"], "action"] == "exclude"  # the proposal's line, now a person's decision
    assert c.get("/api/item/0").json()["decision"]["action"] == "keep"
    # a bad decision is refused and writes nothing
    snapshot = decisions.read_text()
    assert c.post("/api/decide", json={"index": 3, "action": "relabel", "label": "CAT"}).status_code == 422
    assert c.post("/api/decide", json={"index": 3, "action": "delete"}).status_code == 422
    assert decisions.read_text() == snapshot
    # undo, newest first, back to the file as it was (the proposal included)
    assert [c.post("/api/undo", json={}).json()["undone"] for _ in range(4)] == [2, 1, 0, None]
    assert decisions.read_text() == before
    assert c.get("/api/state").json()["reviewed"] == 0


def test_lines_written_by_hand_count_and_a_finished_review_says_so(setup):
    session, rows, decisions = setup
    lines = pd.DataFrame([{"sha256": r["sha256"], "action": "keep", "label": r["given_label"], "status": "confirmed",
                           "who": "Dr Hand", "when": "", "why": "checked", "path": r["path"]} for r in rows[:5]])
    overrides.write(decisions, lines)
    c = TestClient(create_review_app(session))
    state = c.get("/api/state").json()
    assert state["reviewed"] == 5 and c.get(f"/api/item/{state['first']}").json()["rank"] == 6
    r = c.post("/api/decide", json={"index": state["first"], "action": "keep"}).json()
    assert r["reviewed"] == 6 and r["next_open"] is None


def test_a_token_guards_the_api_and_beyond_loopback_one_is_required(setup):
    session, _, _ = setup
    c = TestClient(create_review_app(session, token="s3cret"))
    assert c.get("/").status_code == 200  # the page itself holds no data
    assert c.get("/api/state").status_code == 401
    assert c.post("/api/decide", json={"index": 0, "action": "keep"}).status_code == 401
    assert c.get("/api/state", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/state", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for host in ("127.0.0.1", "localhost", "::1"):
        require_token_off_loopback(host, None)
    with pytest.raises(CxrError, match="CXR_API_TOKEN"):
        require_token_off_loopback("0.0.0.0", None)
    require_token_off_loopback("0.0.0.0", "s3cret")


def test_the_page_refuses_what_it_cannot_review(raw, tmp_path):
    from components.core.contract.errors import DataError

    review, _ = review_folder(raw, tmp_path)
    with pytest.raises(DataError, match="--who"):
        ReviewSession(review, raw, tmp_path / "o.csv", "")
    (review / "summary.json").write_text(json.dumps({"enabled": False}))
    with pytest.raises(DataError, match="typed by hand it always runs"):
        ReviewSession(review, raw, tmp_path / "o.csv", "Dr Test")


def test_another_web_page_cannot_send_a_decision(setup):
    """A page on another site the reviewer has open could post a form or a no-cors fetch to 127.0.0.1: such a request
    cannot carry a JSON content type without a preflight, and a browser names its origin; both are refused."""
    session, _, _ = setup
    c = TestClient(create_review_app(session))
    form = c.post("/api/decide", content=b'{"index": 0, "action": "keep"}', headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    other = c.post("/api/decide", json={"index": 0, "action": "keep"}, headers={"Origin": "http://evil.example"})
    assert other.status_code == 403
    assert c.post("/api/undo", headers={"Origin": "http://evil.example"}).status_code in (403, 415)
    assert session.state()["reviewed"] == 0
    same = c.post("/api/decide", json={"index": 0, "action": "keep"}, headers={"Origin": "http://testserver"})
    assert same.status_code == 200
