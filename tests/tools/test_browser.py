"""The page as a person uses it, in Debian's headless chromium: open the synthetic video, draw strokes with the
mouse, segment, look at the overlay, ask for a frame, correct it, play, export; errors show on the page.

Needs chromium and chromium-driver (`make browser`; CI installs them); skipped with the reason where absent,
unless SIMLEARN_REQUIRE_BROWSER is set (CI), where that is a failure. SIMLEARN_APP_SCREENSHOT=PATH also
saves the page's screenshot there (docs/app.png is made so).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from scipy import ndimage

from agent.config import CRFConfig
from agent.tools.segment_cli import tools_default_config
from agent.tools.webapp import AppState, create_app

from .conftest import mean_j
from .server import JOB_SECONDS, serve

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1400,900")
J_THRESHOLD = 0.8  # exported masks
OVERLAY_J_THRESHOLD = 0.6  # tinted pixels of the canvas against the objects (the blend is faint where colours match)


def _missing(reason: str):
    if os.environ.get("SIMLEARN_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, and SIMLEARN_REQUIRE_BROWSER is set")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    driver_path = shutil.which("chromedriver") or (CHROMEDRIVER if Path(CHROMEDRIVER).exists() else None)
    if not chromium or not driver_path:
        _missing("Debian's chromium and chromium-driver are not installed (make browser installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    options = Options()
    options.binary_location = chromium  # never a browser of selenium's own: the system's
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def base():
    from agent.inference.agent import InteractiveAgent

    # The agent `python -m agent.app` builds, on one CRF worker.
    config = dataclasses.replace(tools_default_config(), device="cpu", crf=CRFConfig(workers=1))
    # The shipped checkpoint: the J threshold needs the real model (seconds on an 8-frame video).
    with serve(create_app(AppState(lambda: InteractiveAgent.from_pretrained(config=config)))) as url:
        yield url


class Page:
    def __init__(self, driver, base: str) -> None:
        self.driver, self.base = driver, base
        driver.get(base)
        self.wait_until("window.app && window.app.state !== null")

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait_until(self, condition: str, seconds: float = JOB_SECONDS):
        deadline = time.monotonic() + seconds
        while not self.js(f"return !!({condition});"):
            if time.monotonic() > deadline:
                raise AssertionError(f"page never reached: {condition}; message: {self.message()!r}")
            time.sleep(0.1)

    def click(self, element_id: str) -> None:
        self.driver.find_element("id", element_id).click()

    def message(self) -> str:
        return self.driver.find_element("id", "message").text

    def run(self, element_id: str) -> None:
        """Click a button that starts a job and wait until the page reports it finished."""
        finished = int(self.js("return Number(document.body.dataset.finished || 0);"))
        self.click(element_id)
        self.wait_until(f"Number(document.body.dataset.finished || 0) > {finished}")

    def type(self, element_id: str, text: str) -> None:
        field = self.driver.find_element("id", element_id)
        field.clear()
        field.send_keys(text)

    def go_to(self, frame: int) -> None:
        from selenium.webdriver.common.keys import Keys

        body = self.driver.find_element("tag name", "body")
        for _ in range(100):
            if (current := int(self.js("return window.app.frame;"))) == frame:
                return
            body.send_keys(Keys.ARROW_RIGHT if current < frame else Keys.ARROW_LEFT)
        raise AssertionError(f"the arrow keys did not reach frame {frame}")

    def draw(self, label: int, points: list[tuple[float, float]]) -> None:
        """Drag the mouse through `points` (x, y in frame pixels of the working size) with `label` chosen."""
        from selenium.webdriver.common.action_chains import ActionChains

        self.click(f"label-{label}")
        canvas = self.driver.find_element("id", "canvas")
        rect = self.js("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
        size = self.js("return [arguments[0].width, arguments[0].height];", canvas)
        scale = rect[0] / size[0]
        # Selenium 4 offsets are from the element's centre, in CSS pixels.
        screen = [(round((x + 0.5) * scale - rect[0] / 2), round((y + 0.5) * scale - rect[1] / 2)) for x, y in points]
        actions = ActionChains(self.driver).move_to_element_with_offset(canvas, *screen[0]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(screen[:-1], screen[1:], strict=True):
            actions.move_by_offset(x1 - x0, y1 - y0)
        actions.release().perform()

    def canvas(self) -> np.ndarray:
        data = self.js("return document.getElementById('canvas').toDataURL('image/png');")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB"))


def _line_through(region: np.ndarray, axis: int) -> list[tuple[int, int]]:
    """End points of the longest run of `region` (eroded) along a row (axis 0) or column (axis 1) through
    its centre of mass: a stroke a person would draw across it."""
    inner = ndimage.binary_erosion(region, iterations=4)
    cy, cx = (int(round(c)) for c in ndimage.center_of_mass(inner))
    line = inner[cy] if axis == 0 else inner[:, cx]
    best, start = (0, 0, 0), None
    for i, inside in enumerate(np.r_[line, False]):
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            best = max(best, (i - start, start, i - 1))
            start = None
    _, lo, hi = best
    return [(lo, cy), (hi, cy)] if axis == 0 else [(cx, lo), (cx, hi)]


def test_draw_segment_correct_play_export(browser, base, small_video, tmp_path):
    page = Page(browser, base)
    truth, scribbled = small_video.masks, small_video.scribbled_frame

    # errors show on the page
    page.click("segment")
    assert "Open a video first" in page.message()
    page.type("video-path", str(tmp_path / "missing.mp4"))
    page.run("open")
    assert "no such video" in page.message() and "error" in browser.find_element("id", "message").get_attribute("class")

    page.type("video-path", str(small_video.video))
    page.run("open")
    assert page.js("return window.app.state.video.num_frames;") == 8, page.message()
    page.click("segment")
    assert "No new stroke" in page.message()

    # round 1: a stroke across each object and one over the background, on the frame where both show well
    page.go_to(scribbled)
    for label in (1, 2):
        page.draw(label, _line_through(truth[scribbled] == label, axis=0))
    page.draw(0, _line_through(truth[scribbled] == 0, axis=0))
    assert page.js("return window.app.pending.length;") == 3
    page.run("segment")
    assert "segmented 8 frames" in page.message(), page.message()
    shot = os.environ.get("SIMLEARN_APP_SCREENSHOT")
    page.wait_until("document.getElementById('canvas').dataset.mask === 'shown'", 30)
    browser.save_screenshot(str(tmp_path / "app.png"))
    if shot:
        browser.save_screenshot(shot)

    # the overlay: the canvas differs from the bare frame where the masks are
    page.go_to(0)
    page.wait_until("document.getElementById('canvas').dataset.mask === 'shown' && window.app.frame === 0", 30)
    frame = np.asarray(Image.open(io.BytesIO(requests.get(f"{base}/api/frame/0", timeout=10).content)).convert("RGB"))
    tinted = np.abs(page.canvas().astype(int) - frame.astype(int)).max(-1) > 12
    overlay_j = mean_j(tinted.astype(np.uint8), (truth[0] > 0).astype(np.uint8))
    assert overlay_j >= OVERLAY_J_THRESHOLD, overlay_j

    # suggest a frame, correct it with a background stroke where the agent put an object wrongly (or anywhere)
    page.click("suggest")
    page.wait_until("window.app.lastMessage.includes('least sure')", 30)
    suggested = int(page.js("return window.app.frame;"))
    assert f"Frame {suggested} " in page.message()
    page.draw(0, _line_through(truth[suggested] == 0, axis=1))
    page.run("segment")
    assert page.js("return window.app.state.rounds;") == 2 and "round 2" in page.message()

    # play the result
    page.click("play")
    start = int(page.js("return window.app.frame;"))
    page.wait_until(f"window.app.frame !== {start}", 30)
    page.click("play")

    # export what agent.segment writes, and refuse to overwrite it
    out = tmp_path / "export"
    page.type("output", str(out))
    page.run("export")
    assert "exported 8 masks" in page.message(), page.message()
    masks = np.stack([np.asarray(Image.open(out / "masks" / f"{i:05d}.png")) for i in range(8)])
    j = mean_j(masks, truth)
    print(f"browser round-trip J: {j:.3f} (overlay J {overlay_j:.3f})")
    assert j >= J_THRESHOLD
    assert (out / "masks.json").is_file() and (out / "overlay.mp4").is_file() and (out / "scribbles.json").is_file()
    page.click("export")
    page.wait_until("window.app.lastMessage.includes('not empty')", 30)


def test_load_strokes_continues_an_export(browser, tiny_page, small_video, tmp_path):
    """Load strokes… next to Open: an earlier export's scribbles.json for the open video is played, its strokes
    shown as segmented, and the page goes on from there (the tiny model: no J here)."""
    page = Page(browser, tiny_page)
    page.type("strokes-path", str(tmp_path / "missing.json"))
    page.click("load-strokes")
    assert "Open a video first" in page.message()
    page.type("video-path", str(small_video.folder))
    page.run("open")
    page.go_to(4)
    page.draw(1, [(90, 60), (110, 60)])
    page.run("segment")
    out = tmp_path / "earlier"
    page.type("output", str(out))
    page.run("export")
    assert "exported 8 masks" in page.message(), page.message()
    page.click("reset")
    page.wait_until("window.app.state.rounds === 0 && window.app.segmented.length === 0", 30)

    page.click("load-strokes")  # the bad path typed first: a red line, nothing changes
    page.wait_until("window.app.lastMessage.includes('no such scribble file')", 30)
    assert "error" in browser.find_element("id", "message").get_attribute("class")
    assert page.js("return window.app.state.rounds;") == 0
    page.type("strokes-path", str(out / "scribbles.json"))
    page.run("load-strokes")
    assert "played 1 round of strokes" in page.message(), page.message()
    page.wait_until("window.app.state.rounds === 1 && window.app.segmented.length === 1", 30)
    assert "0 new strokes; 1 round segmented" in browser.find_element("id", "status").text
    page.wait_until("document.getElementById('canvas').dataset.mask === 'shown'", 30)
    page.draw(0, [(5, 10), (200, 10)])
    page.run("segment")
    assert page.js("return window.app.state.rounds;") == 2, page.message()
    page.type("output", str(tmp_path / "again"))
    page.run("export")
    record = json.loads((tmp_path / "again" / "scribbles.json").read_text())
    assert record["rounds"][0] == json.loads((out / "scribbles.json").read_text())["rounds"][0]
    assert len(record["rounds"]) == 2

    record["segmented"]["working_size"] = [100, 178]  # as `--working-size 100` made it: other masks, said in amber
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(record))
    page.click("reset")
    page.wait_until("window.app.state.rounds === 0 && window.app.segmented.length === 0", 30)
    page.type("strokes-path", str(edited))
    page.run("load-strokes")
    assert "played 2 rounds" in page.message() and "; warning: " in page.message(), page.message()
    assert "--working-size (frames of 178x100 then, 213x120 now)" in page.message()
    assert "warning" in browser.find_element("id", "message").get_attribute("class")
