"""The web page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
upload a real chest X-ray, see a label, probabilities, the Grad-CAM overlay, and the warning that the
image is unlike the training data (the test model was trained on the synthetic demo films)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from benchmarks.processes import free_port, start_cxr_serve, stop

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.slow


@pytest.fixture
def chromium():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is missing: .ci/system-deps.sh installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return CHROMIUM


def test_upload_shows_label_and_overlay(chromium, tiny_model_dir, shared_sample, tmp_path):
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_cxr_serve(["--model", str(tiny_model_dir)], port, tmp_path / "serve.log")
    profile = tempfile.mkdtemp(prefix="chromium-")
    image = sorted((shared_sample / "PNEUMONIA").iterdir())[0]
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(chromium), headless=True,
                                                        args=FLAGS)
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
            page.set_input_files("#file", str(image))
            page.click("#submit")
            page.wait_for_selector("#result.shown", timeout=60_000)
            label = page.text_content("#label")
            assert label in ("COVID19", "NORMAL", "PNEUMONIA")
            assert page.locator(".bar").count() == 3
            assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")
            width = page.evaluate("document.getElementById('overlay').naturalWidth")
            assert width > 0  # the overlay really decoded as an image
            # a real film shown to a model trained on synthetic ones: the OOD warning sits next to the prediction
            assert page.get_attribute("#ood", "class") == "unlike" and page.is_visible("#ood")
            assert "unlike the images the model was trained on" in page.text_content("#ood")
            assert "OOD score" in page.text_content("#ood") and page.text_content("#request").startswith("request ")
            page.screenshot(path=str(tmp_path / "page.png"))

            page.set_input_files("#file", str(Path(__file__)))  # a text file: a readable error, no crash
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "415" in page.text_content("#error")
            ctx.close()
    finally:
        stop(server)
        shutil.rmtree(profile, ignore_errors=True)
