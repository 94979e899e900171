"""The browser page at GET /: served without a build step or CDN, and driven
in a real headless Chromium (Debian's chromium + chromium-driver, through
selenium) whose fake capture device plays a recording: the text on the page
equals offline transcription of the audio the page sent. A screenshot of the
page after the transcription is kept ($VOXTRAL_TEST_ARTIFACTS, else the test's
temporary directory)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import voxtral  # noqa: E402
from server_util import running_server  # noqa: E402

NAME = "voxtral-test"
KEY = "s3cret"
STATIC = Path(voxtral.__file__).parent / "server" / "static"


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


@pytest.fixture(scope="module")
def server(model):
    with running_server(model, names=(NAME,), api_key=KEY) as srv:
        yield srv


def test_page_is_served_without_key_and_loads_nothing_external(server):
    r = httpx.get(server.base_url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    cfg = httpx.get(server.base_url + "/page/config").json()
    assert cfg["sample_rate"] == 16000 and cfg["auth_required"] is True and cfg["model"] == NAME
    assert cfg["delay"] == {"min": 80, "max": 2400, "step": 80, "default": 480}
    for name in ("app.js", "worklet.js", "style.css"):
        assert httpx.get(f"{server.base_url}/static/{name}").status_code == 200
    # everything the page loads is its own: no URL with a host in any of its files
    for f in STATIC.iterdir():
        assert not re.search(r"(src|href)=\"(https?:)?//", f.read_text()), f
        assert not re.search(r"fetch\(\"https?://|import .* from \"https?://", f.read_text()), f
    # the rest still needs the key
    assert httpx.get(server.base_url + "/v1/models").status_code == 401
    assert httpx.get(server.base_url + "/static/../v1/models").status_code == 401


def test_browser_key_subprotocol(server):
    """Browsers cannot send an Authorization header on a WebSocket: the key rides as
    the subprotocol openai-insecure-api-key.KEY and `realtime` is accepted."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with connect(server.ws_url, subprotocols=["realtime", "openai-insecure-api-key." + KEY]) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
    with pytest.raises(InvalidStatus):
        with connect(server.ws_url, subprotocols=["realtime", "openai-insecure-api-key.wrong"]):
            pass


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (the test extra has it)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium is not installed (apt install chromium chromium-driver; .ci/run does)")
    return webdriver, browser, driver


def _reference(model, pcm: np.ndarray) -> str:
    s = model.stream()
    return "".join(e.text for e in s.feed(pcm) + s.finish())


def test_page_in_headless_chromium(server, model, audio_dir, tmp_path):
    webdriver, browser, driver_path = _chromium()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wav = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=900,640",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(server.base_url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "mic").is_enabled())
        assert driver.find_element(By.ID, "key-label").is_displayed()  # the server needs a key
        driver.find_element(By.ID, "key").send_keys(KEY)
        driver.find_element(By.ID, "mic").click()
        # capture started (the status line may already show a later message, e.g. a lag notice)
        wait.until(lambda d: d.find_element(By.ID, "mic").text == "Stop")
        # the recording plays once (5 s); deltas show while it does
        sent = "return window.voxtral.sent.reduce((n, a) => n + a.length, 0)"
        live_seen = False
        deadline = time.monotonic() + 60
        while driver.execute_script(sent) < 6 * 16000:
            live_seen = live_seen or bool(driver.find_element(By.ID, "live").text)
            assert time.monotonic() < deadline, driver.find_element(By.ID, "status").text
            time.sleep(0.2)
        driver.find_element(By.ID, "mic").click()  # stop: the final commit
        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return window.voxtral.done.length") == 1)
        page_text = driver.execute_script("return document.querySelector('#lines p').textContent")
        b64 = driver.execute_script("""
            const all = window.voxtral.sent, n = all.reduce((k, a) => k + a.length, 0);
            const pcm = new Int16Array(n); let o = 0;
            for (const a of all) { pcm.set(a, o); o += a.length; }
            const bytes = new Uint8Array(pcm.buffer); let bin = "";
            for (let i = 0; i < bytes.length; i += 0x8000)
                bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
            return btoa(bin);""")
        rtf = driver.find_element(By.ID, "rtf").text
        artifacts = Path(os.environ.get("VOXTRAL_TEST_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(artifacts / "page.png"))
    finally:
        driver.quit()

    pcm = np.frombuffer(base64.b64decode(b64), dtype="<i2")
    assert np.sqrt(np.mean((pcm / 32768.0) ** 2)) > 0.01  # the recording, not silence, was captured
    expected = _reference(model, pcm)
    assert expected.strip()
    # the page shows the transcript of exactly what it sent (the line's text in the DOM)
    assert page_text == expected
    assert live_seen, "no delta was shown while the audio was playing"
    assert re.fullmatch(r"\d+\.\d\d", rtf), rtf
    assert (artifacts / "page.png").stat().st_size > 1000
