"""The web console end to end in a real headless Chromium, against the real stack and a running worker.

Debian's chromium + chromedriver (scripts/install_browser.sh) drive the page through selenium; the
console runs as `python -m processor.cli console` and talks only to Kafka and S3, like any client.

Engine switch: ``CONSOLE_TEST_ENGINE=tiny`` (default) runs the worker on the real IndexTTS2 code with
the tiny random model (devstack.tiny_model, built once into .cache/tiny-model); ``tone`` uses the
deterministic tone engine from tests/support (seconds instead of minutes, no indextts code).

Screenshots of the form and of a finished result are saved under artifacts/console/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from processor.console.segments import estimate_segments
from tests.support.audio import NOT_AUDIO, voice_clip
from tests.support.workers import REPO, Topics, WorkerProcess, free_port, worker_env

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
ENGINE = os.environ.get("CONSOLE_TEST_ENGINE", "tiny")
ARTIFACTS = REPO / "artifacts" / "console"
TINY_DIR = REPO / ".cache" / "tiny-model"

HAVE_BROWSER = os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)

JOB_TIMEOUT = 300 if ENGINE == "tiny" else 60


def engine_env() -> dict[str, str]:
    if ENGINE == "tone":
        return {"INDEX_TTS_ENGINE": "tests.support.tone_engine:tone_engine", "TONE_ENGINE_SECONDS": "3"}
    if ENGINE != "tiny":
        raise ValueError(f"CONSOLE_TEST_ENGINE must be tiny or tone, not {ENGINE!r}")
    from devstack import tiny_model

    tiny_model.build(TINY_DIR)  # idempotent: a complete build is reused
    return {"INDEX_TTS_ENGINE": "processor.engine.loader:indextts2", "INDEX_TTS_MODEL_DIR": str(TINY_DIR),
            "HF_HOME": str(TINY_DIR / "hf"), "HF_HUB_OFFLINE": "1", "INDEX_TTS_DEVICE": "cpu"}


@dataclass
class Console:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Env:
    stack: Any
    bucket: str
    topics: Topics
    worker: WorkerProcess
    console: Console


@pytest.fixture(scope="module")
def env(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from processor.config import S3Settings
    from processor.storage import Storage
    from processor.voices import VoiceCatalog

    tmp = tmp_path_factory.mktemp("console")
    prefix = f"console-{uuid.uuid4().hex[:8]}"
    topics = Topics.create(stack, prefix, partitions=2)
    bucket = prefix
    stack.create_bucket(bucket)
    storage = Storage(S3Settings(endpoint_url=stack.env()["S3_ENDPOINT_URL"], bucket=bucket),
                      client=stack.s3_client())
    catalog = VoiceCatalog(storage, bucket, "voices")
    catalog.add("alice", voice_clip(seconds=2.0, seed=1), description="harmonic test voice", language="en",
                gender="f")
    # A preset whose clip is gone: the worker answers reference_not_found, which the page must show.
    ghost = catalog.add("ghost", voice_clip(seconds=1.0, seed=2), description="its clip was deleted")
    stack.s3_client().delete_object(Bucket=bucket, Key=ghost.reference.key)

    wenv = worker_env(stack, topics, bucket, f"{prefix}-group", tmp, **engine_env())
    worker = WorkerProcess(wenv, tmp / "worker.log").start()
    port = free_port()
    console_log = tmp / "console.log"
    cenv = {**{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INDEX_TTS_"))},
            **stack.env(bucket), **topics.env(), "PYTHONPATH": str(REPO)}
    with console_log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "processor.cli", "console", "--port", str(port)],
                                env=cenv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    console = Console(f"http://127.0.0.1:{port}/", proc, console_log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"console exited:\n{console.logs()}"
            try:
                if all(t["ready"] for t in console.api("api/status")["topics"].values()):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"console not ready:\n{console.logs()}"
            time.sleep(0.3)
        worker.wait_ready(timeout=600)
        yield Env(stack, bucket, topics, worker, console)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        worker.stop(60)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not HAVE_BROWSER:
        pytest.skip(f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
                    "(run scripts/install_browser.sh)")
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1900", "--autoplay-policy=no-user-gesture-required",
                 "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, check: Callable[[WebDriver], Any], timeout: float = 30, what: str = "") -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check, message=what)


def shot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    # Emulate a viewport as tall as the page so the screenshot holds all of it.
    height = int(driver.execute_script(
        "return Math.max(Math.ceil(document.querySelector('main').getBoundingClientRect().bottom + scrollY) + 8, 600)"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # type: ignore[attr-defined]
                           {"width": 1400, "height": min(height, 4000), "deviceScaleFactor": 1, "mobile": False})
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]
    return path


def set_value(driver: WebDriver, elem: WebElement, value: str) -> None:
    """Set an input's value like a user would (fires input + change)."""
    driver.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));"
        "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));", elem, value)


def fetch_bytes(driver: WebDriver, url: str, n: int = 12) -> bytes:
    """The first ``n`` bytes of ``url`` as the page itself fetches them."""
    got = driver.execute_async_script(
        "const [url, n, done] = arguments;"
        "fetch(url).then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b.slice(0, n)))))"
        ".catch(e => done(String(e)));", url, n)
    assert isinstance(got, list), got
    return bytes(got)


def job_state(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "job-state").text)


def submit_and_follow(driver: WebDriver, timeout: float) -> tuple[str, list[str]]:
    """Click Synthesize, then watch the request card until done/error; returns (request id, progress texts)."""
    old = driver.find_element(By.ID, "job-id").text if driver.find_element(By.ID, "job").is_displayed() else None
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "job").is_displayed()
             and d.find_element(By.ID, "job-id").text not in ("", old), 20,
             f"no request card; form error: {driver.find_element(By.ID, 'form-error').text!r}")
    rid = driver.find_element(By.ID, "job-id").text
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(driver)
        text = driver.find_element(By.ID, "job-progress-text").text
        if not seen or seen[-1] != f"{state}|{text}":
            seen.append(f"{state}|{text}")
        if state in ("done", "error"):
            return rid, seen
        time.sleep(0.1)
    raise AssertionError(f"request {rid} not finished in {timeout}s; saw {seen}")


def test_console_end_to_end(env: Env, browser: WebDriver) -> None:
    d = browser
    d.get(env.console.url)
    wait_for(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", 20, "page init")
    wait_for(d, lambda d: "alice" in [o.get_attribute("value") for o in Select(d.find_element(By.ID, "voice")).options],
             20, "voice presets from S3")

    # --- the form: text, voice, emotion vector, advanced settings, segment preview
    text = ("Hello from the console. This sentence becomes speech, one segment at a time! "
            "And a third sentence, to show progress.")
    area = d.find_element(By.ID, "text")
    area.clear()
    area.send_keys(text)
    Select(d.find_element(By.ID, "voice")).select_by_value("alice")
    d.find_element(By.CSS_SELECTOR, "input[name=emotion_mode][value=vector]").click()
    assert d.find_element(By.ID, "emo-vector").is_displayed()
    sliders = d.find_elements(By.CSS_SELECTOR, "#emo-vector input[type=range]")
    assert [s.get_attribute("data-name") for s in sliders] == [
        "happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm"]
    set_value(d, sliders[0], "0.8")  # happy
    set_value(d, sliders[6], "0.3")  # surprised
    set_value(d, d.find_element(By.ID, "emo-alpha"), "0.7")
    d.find_element(By.CSS_SELECTOR, "#advanced summary").click()
    defaults = {"top_p": "0.8", "top_k": "30", "temperature": "0.8", "num_beams": "3", "repetition_penalty": "10",
                "max_mel_tokens": "1500", "max_text_tokens_per_segment": "120", "interval_silence_ms": "200"}
    for name, value in defaults.items():
        assert float(d.find_element(By.ID, name).get_attribute("value")) == float(value), name
    # Small settings keep the CPU run short; 20 tokens per segment splits the three sentences.
    set_value(d, d.find_element(By.ID, "num_beams"), "1")
    set_value(d, d.find_element(By.ID, "max_mel_tokens"), "50")
    set_value(d, d.find_element(By.ID, "max_text_tokens_per_segment"), "20")
    wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#segments li")) >= 2, 10, "segment preview")
    assert "estimate" in d.find_element(By.ID, "seg-note").text.lower()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f"#workers tr[data-worker-id='{env.worker.worker_id}']"),
             30, "worker row")
    shot(d, "console-form.png")

    # --- submit, follow progress, get the result
    rid, seen = submit_and_follow(d, JOB_TIMEOUT)
    assert job_state(d) == "done", (seen, d.find_element(By.ID, "job-error").text, env.worker.logs()[-3000:])
    assert rid.startswith("console-")
    assert any(s.startswith("running|segment ") for s in seen), f"no progress shown: {seen}"
    job = env.console.api(f"api/requests/{rid}")
    assert job["progress_events"] >= 1 and job["result"]["segments"] >= 2, job
    params = job["result"]["parameters"]
    assert params["emotion_mode"] == "vector" and params["emotion_alpha"] == pytest.approx(0.7)
    assert params["emotion_vector"][0] == pytest.approx(0.8) and params["emotion_vector"][6] == pytest.approx(0.3)
    # The form sends only what differs from the defaults; the result reports every setting in effect.
    assert params["generation"] == {"top_p": 0.8, "top_k": 30.0, "temperature": 0.8, "num_beams": 1.0,
                                    "repetition_penalty": 10.0, "max_mel_tokens": 50.0}
    assert params["max_text_tokens_per_segment"] == 20

    player = d.find_element(By.ID, "player")
    src = player.get_attribute("src")
    assert src and src.endswith(f"/api/audio/{rid}"), src
    head = fetch_bytes(d, src)
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE", head
    with urllib.request.urlopen(src, timeout=10) as r:
        wav = r.read()
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) == job["result"]["size_bytes"]
    # The browser decoded it: metadata loaded and the duration matches the result event.
    wait_for(d, lambda d: d.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0", player),
             20, "audio element loads the WAV")
    duration = d.execute_script("return arguments[0].duration", player)
    assert duration == pytest.approx(job["result"]["duration_seconds"], abs=0.05)
    assert d.find_element(By.ID, "result-duration").text.endswith(" s")
    assert "synthesis" in d.find_element(By.ID, "result-processing").text
    assert "×" in d.find_element(By.ID, "result-rtf").text
    assert d.find_element(By.ID, "result-worker").text == env.worker.worker_id

    # --- workers view shows the running worker
    row_css = f"#workers tr[data-worker-id='{env.worker.worker_id}']"

    def worker_cells(d: WebDriver) -> list[str] | None:
        """The worker row's cell texts once it shows the finished job (the table re-renders: re-find)."""
        try:
            cells = [c.text for c in d.find_element(By.CSS_SELECTOR, row_css).find_elements(By.TAG_NAME, "td")]
        except (NoSuchElementException, StaleElementReferenceException):
            return None
        # Lag comes from the worker's periodic health event: wait for one sent after the commit.
        done = cells[1] == "ready" and cells[6] == "1 / 0" and cells[4].startswith("0 (0), 1 (0)")
        return cells if done else None

    cells = wait_for(d, worker_cells, 60, "worker row: ready, 1 done, no lag")
    model = env.console.api("api/workers")["workers"][0]["model"]
    assert model["model_type"] in cells[3]
    assert cells[4].startswith("0 (0), 1 (0)"), cells[4]  # both request partitions, no lag
    assert "CPU" in cells[2] or "×" in cells[2]
    assert "jobs/min" in cells[7]

    # --- history: the result is listed and can be played again
    hist_css = f"#history tr[data-request-id='{rid}']"
    hist = wait_for(d, lambda d: d.find_element(By.CSS_SELECTOR, hist_css), 15, "history row")
    assert "success" in hist.text
    shot(d, "console-result.png")
    d.execute_script("arguments[0].removeAttribute('src'); arguments[0].load()", player)
    d.execute_script("document.querySelector(arguments[0]).click()", f"{hist_css} button.replay")
    wait_for(d, lambda d: (player.get_attribute("src") or "").endswith(f"/api/audio/{rid}"), 10, "replay")
    assert "playing" in (d.find_element(By.CSS_SELECTOR, hist_css).get_attribute("class") or "")


def test_console_upload_and_errors(env: Env, browser: WebDriver, tmp_path: Path) -> None:
    d = browser
    d.get(env.console.url)
    wait_for(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", 20, "page init")
    wait_for(d, lambda d: len(Select(d.find_element(By.ID, "voice")).options) >= 2, 20, "voice presets")
    area = d.find_element(By.ID, "text")
    area.clear()
    area.send_keys("An uploaded voice speaks.")
    set_value(d, d.find_element(By.ID, "num_beams"), "1")
    set_value(d, d.find_element(By.ID, "max_mel_tokens"), "50")

    # A file that is not audio is refused by the console (check_audio), nothing is stored.
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(NOT_AUDIO)
    d.find_element(By.ID, "voice-file").send_keys(str(bad))
    status = d.find_element(By.ID, "voice-upload-status")
    wait_for(d, lambda d: "invalid_reference_audio" in status.text, 15, "upload refused")

    # A real clip is stored under uploads/ and becomes the voice.
    good = tmp_path / "my-voice.wav"
    good.write_bytes(voice_clip(seconds=1.5, seed=7))
    d.find_element(By.ID, "voice-file").send_keys(str(good))
    wait_for(d, lambda d: "stored s3://" in status.text, 15, f"upload: {status.text}")
    uri = status.get_attribute("data-uri")
    assert uri.startswith(f"s3://{env.bucket}/uploads/") and uri.endswith(".wav")
    key = uri.split("/", 3)[3]
    assert env.stack.s3_client().head_object(Bucket=env.bucket, Key=key)["ContentLength"] > 1000
    assert Select(d.find_element(By.ID, "voice")).first_selected_option.get_attribute("value") == uri

    # Server-side validation (validate_request) answers before anything is published.
    d.find_element(By.CSS_SELECTOR, "input[name=emotion_mode][value=vector]").click()
    for s in d.find_elements(By.CSS_SELECTOR, "#emo-vector input[type=range]"):
        set_value(d, s, "0")
    d.find_element(By.ID, "submit").click()
    err = d.find_element(By.ID, "form-error")
    wait_for(d, lambda d: "invalid_request" in err.text, 10, "validation error")
    assert "emotion_vector" in err.text

    # Emotion text mode with the uploaded voice: a full round trip.
    d.find_element(By.CSS_SELECTOR, "input[name=emotion_mode][value=text]").click()
    d.find_element(By.ID, "emo-text").send_keys("calm and warm")
    rid, seen = submit_and_follow(d, JOB_TIMEOUT)
    assert job_state(d) == "done", (seen, d.find_element(By.ID, "job-error").text)
    result = env.console.api(f"api/requests/{rid}")["result"]
    assert result["parameters"]["voice"] == uri and result["parameters"]["emotion_mode"] == "text"

    # A worker-side error (the preset's clip was deleted) shows its code and message.
    d.find_element(By.CSS_SELECTOR, "input[name=emotion_mode][value=same_as_voice]").click()
    Select(d.find_element(By.ID, "voice")).select_by_value("ghost")
    rid, seen = submit_and_follow(d, JOB_TIMEOUT)
    assert job_state(d) == "error", seen
    assert d.find_element(By.ID, "job-error-code").text == "reference_not_found"
    assert "does not exist" in d.find_element(By.ID, "job-error-message").text
    shot(d, "console-error.png")


# ------------------------------------------------------------------ the JSON API without a browser


def call(env: Env, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    return httpx.request(method, env.console.url + path, timeout=15, **kwargs)


def test_api_refuses_bad_input(env: Env) -> None:
    r = call(env, "POST", "api/requests", json={"text": "x" * 10_001, "voice": "alice"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "text_too_long"
    r = call(env, "POST", "api/requests", json={"text": "hi", "voice": "nobody"})
    assert r.status_code == 400 and r.json()["error"] == {"code": "unknown_voice",
                                                          "message": "no voice preset named 'nobody'"}
    r = call(env, "POST", "api/requests", json={"text": "hi", "voice": "alice", "top_p": 1.5})
    assert r.status_code == 400 and "top_p" in r.json()["error"]["message"]
    r = call(env, "POST", "api/requests", json={"text": "hi", "voice": "s3://elsewhere/x.wav",
                                                "emotion_mode": "reference"})
    assert r.status_code == 400 and "emotion clip" in r.json()["error"]["message"]
    r = call(env, "POST", "api/requests", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    # Uploads: over the cap (S3_MAX_REFERENCE_BYTES, default 20 MiB) and too short to be a reference.
    big = b"\0" * (20 * 1024 * 1024 + 100 * 1024)
    r = call(env, "POST", "api/uploads", files={"file": ("big.wav", big, "audio/wav")}, data={"kind": "voice"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "reference_too_large"
    r = call(env, "POST", "api/uploads", files={"file": ("short.wav", voice_clip(seconds=0.1), "audio/wav")},
             data={"kind": "emotion"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_reference_audio"
    # Only WAVs of results the console has seen are served.
    r = call(env, "GET", "api/audio/never-submitted")
    assert r.status_code == 404
    assert call(env, "GET", "api/requests/never-submitted").status_code == 404


def test_api_upload_is_content_addressed(env: Env) -> None:
    clip = voice_clip(seconds=1.2, seed=11)
    a = call(env, "POST", "api/uploads", files={"file": ("a.wav", clip, "audio/wav")}, data={"kind": "voice"})
    b = call(env, "POST", "api/uploads", files={"file": ("b.wav", clip, "audio/wav")}, data={"kind": "emotion"})
    assert a.status_code == b.status_code == 201
    assert a.json()["uri"] == b.json()["uri"]
    assert a.json()["seconds"] == pytest.approx(1.2, abs=0.01) and a.json()["format"] == "WAV"


def test_api_config_and_segments(env: Env) -> None:
    cfg = call(env, "GET", "api/config").json()
    assert cfg["defaults"] == {"top_p": 0.8, "top_k": 30, "temperature": 0.8, "num_beams": 3,
                               "repetition_penalty": 10.0, "max_mel_tokens": 1500,
                               "max_text_tokens_per_segment": 120, "interval_silence_ms": 200}
    assert cfg["emotion_names"] == ["happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised",
                                    "calm"]
    seg = call(env, "POST", "api/segments", json={"text": "One. Two, three! 你好。", "max_text_tokens_per_segment": 20})
    body = seg.json()
    assert body["estimate"] is True and "estimate" in body["note"].lower()
    assert [s["text"] for s in body["segments"]] == ["One. Two, three! 你好。"]


def test_segment_estimate() -> None:
    text = ("Hello world, this is a test. How are you today? I am fine, thank you! "
            "你好，世界。这是一个很小的语音合成模型。")
    segs = estimate_segments(text, 20)
    assert [s.text for s in segs] == ["Hello world, this is a test. How are you today? I am fine, thank you!",
                                      "你好，世界。这是一个很小的语音合成模型。"]
    assert all(s.tokens <= 20 for s in segs)
    # Everything fits in one segment at the default budget; nothing is lost or reordered.
    assert [s.text for s in estimate_segments(text, 120)] == [text]
    # A run-on text without punctuation is cut by length.
    long = estimate_segments("word " * 300, 120)
    assert [s.tokens for s in long] == [120, 120, 60]
    assert estimate_segments("", 120) == []
