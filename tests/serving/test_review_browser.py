"""The label review as a person gets it, in a temporary git repository with the real dvc.yaml: `dvc repro` with
review.enabled false writes empty reports; `cxr review-labels` typed by hand runs the review anyway; `cxr
review-labels serve` shows the suspects in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright),
three decisions made with keys (and one undone) become confirmed lines of data/label_overrides.csv, and real `dvc
status` then says ingest must re-run. ``CXR_REVIEW_SCREENSHOT=path.png`` keeps the page's screenshot
(docs/images/label-review.png is the same page, served on the review of the shared sample's real films)."""

import json
import os
import shutil
import subprocess
import tempfile

import pandas as pd
import pytest

from benchmarks.processes import BIN, copy_repo, env, free_port, sh, stop, wait_http
from components.core.data import overrides
from tests.serving.test_browser import FLAGS, chromium  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow

PARAMS = {
    "data": {"demo": {"patients_per_class": 12, "max_images_per_patient": 2, "min_side": 64, "max_side": 96,
                      "label_noise": 0.15}},
    "validate": {"workers": 1, "bias_audit": {"enabled": False}},
    "train": {"image_size": 32},
    "review": {"enabled": False, "folds": 2, "image_size": 32, "epochs": 4, "gallery": 2},
}


def test_three_decisions_with_keys_become_confirmed_lines_and_ingest_is_stale(chromium, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    repo = copy_repo(tmp_path / "repo", PARAMS)
    out = sh(["dvc", "repro", "review-labels"], repo).stdout
    assert "Running stage 'ingest'" in out and "Running stage 'review-labels'" in out
    off = json.loads((repo / "reports/label_review/summary.json").read_text())
    assert off["enabled"] is False  # the flag decides what dvc repro runs
    sh(["cxr", "review-labels"], repo)  # typed by hand: the review runs whatever review.enabled says
    summary = json.loads((repo / "reports/label_review/summary.json").read_text())
    suspects = pd.read_csv(repo / "reports/label_review/suspects.csv")
    assert summary["enabled"] and len(suspects) >= 4, summary
    assert "ingest" not in sh(["dvc", "status", "ingest"], repo).stdout  # up to date before any decision

    port = free_port()
    log = tmp_path / "review-serve.log"
    server = subprocess.Popen([str(BIN / "cxr"), "review-labels", "serve", "--who", "Dr Browser", "--port", str(port)],
                              cwd=repo, env=env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        wait_http(f"http://127.0.0.1:{port}/", server, log=log)
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(chromium), headless=True,
                                                        args=FLAGS, viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            total = len(suspects)
            page.wait_for_function(f"document.getElementById('progress').textContent === '0 of {total} reviewed'")
            page.wait_for_function("document.getElementById('film').naturalWidth > 0")
            assert page.locator("#actions button").count() == 7  # keep, 3 relabels, exclude, skip, undo
            assert "Grad-CAM for" in page.text_content("#cap-given") and page.locator("#probs .bar").count() == 3
            if os.environ.get("CXR_REVIEW_SCREENSHOT"):
                page.screenshot(path=os.environ["CXR_REVIEW_SCREENSHOT"], full_page=True)
            seen = []

            def settled(reviewed: int) -> None:
                page.wait_for_function(f"document.getElementById('progress').textContent === '{reviewed} of {total} "
                                       "reviewed' && !document.body.dataset.busy")

            def press(key: str, reviewed: int) -> None:
                seen.append(page.text_content("#film-caption").split(" (")[0])
                page.keyboard.press(key)
                settled(reviewed)

            press("k", 1)  # keep
            press("2", 2)  # relabel to the second class (NORMAL), or keep when it is NORMAL already
            press("x", 3)  # exclude
            page.keyboard.press("u")  # undo the exclusion: back on that film
            settled(2)
            assert page.text_content("#film-caption").split(" (")[0] == seen[2]
            press("x", 3)
            page.keyboard.press("s")  # skip: nothing is written
            page.wait_for_timeout(300)
            ctx.close()
    finally:
        stop(server)
        shutil.rmtree(profile, ignore_errors=True)

    lines = overrides.read(repo / "data/label_overrides.csv", ["COVID19", "NORMAL", "PNEUMONIA"])
    assert len(lines) == 3 and set(lines["status"]) == {"confirmed"} and set(lines["who"]) == {"Dr Browser"}
    assert list(lines["path"]) == seen[:2] + seen[3:4]
    by_path = suspects.set_index("path")
    expected_second = "keep" if by_path.loc[seen[1], "given_label"] == "NORMAL" else "relabel"
    assert list(lines["action"]) == ["keep", expected_second, "exclude"]
    assert list(lines["sha256"]) == [by_path.loc[p, "sha256"] for p in lines["path"]]
    assert all(w.endswith("Z") for w in lines["when"])
    status = sh(["dvc", "status", "ingest"], repo).stdout  # (that ingest applies them: test_label_decisions.py)
    assert "ingest:" in status and "data/label_overrides.csv" in status and "modified" in status
