"""The console with the output options, in headless Chromium against the real stack: the segment
timeline fills in with text while the job runs, streamed segments play in order as they arrive,
and the result shows its format and subtitle files.

The worker runs the tone engine (seconds, not minutes), held for a few seconds per request so the
segments arrive one by one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.integration.test_console import Console, browser, set_value, shot, wait_for  # noqa: F401 (fixture)
from tests.support.audio import voice_clip
from tests.support.decode import decode
from tests.support.workers import REPO, Topics, WorkerProcess, free_port, worker_env

TEXT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"


@pytest.fixture(scope="module")
def console(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    from processor.config import S3Settings
    from processor.storage import Storage
    from processor.voices import VoiceCatalog

    tmp = tmp_path_factory.mktemp("console-stream")
    prefix = f"cstream-{uuid.uuid4().hex[:8]}"
    topics = Topics.create(stack, prefix, partitions=1)
    stack.create_bucket(prefix)
    storage = Storage(S3Settings(endpoint_url=stack.env()["S3_ENDPOINT_URL"], bucket=prefix),
                      client=stack.s3_client())
    VoiceCatalog(storage, prefix, "voices").add("alice", voice_clip(seconds=2.0, seed=1), language="en")
    worker = WorkerProcess(worker_env(stack, topics, prefix, f"{prefix}-group", tmp,
                                      TONE_ENGINE_SECONDS="4"), tmp / "worker.log").start()
    port = free_port()
    log = tmp / "console.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INDEX_TTS_"))},
           **stack.env(prefix), **topics.env(), "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "processor.cli", "console", "--port", str(port)],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    c = Console(f"http://127.0.0.1:{port}/", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"console exited:\n{c.logs()}"
            try:
                if all(t["ready"] for t in c.api("api/status")["topics"].values()):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"console not ready:\n{c.logs()}"
            time.sleep(0.3)
        worker.wait_ready()
        yield c
    finally:
        proc.terminate()
        worker.terminate()
        try:
            proc.wait(15)
            worker.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            worker.kill()


def test_timeline_and_live_playback_while_it_renders(console: Console, browser: WebDriver) -> None:  # noqa: F811
    d = browser
    d.get(console.url)
    wait_for(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", 20, "page init")
    wait_for(d, lambda d: "alice" in [o.get_attribute("value") for o in Select(d.find_element(By.ID, "voice")).options],
             20, "voice presets")
    area = d.find_element(By.ID, "text")
    area.clear()
    area.send_keys(TEXT)
    Select(d.find_element(By.ID, "voice")).select_by_value("alice")
    assert [o.get_attribute("value") for o in Select(d.find_element(By.ID, "output_format")).options] == [
        "wav", "flac", "opus", "mp3"]
    Select(d.find_element(By.ID, "output_format")).select_by_value("opus")
    rates = [o.get_attribute("value") for o in Select(d.find_element(By.ID, "sample_rate")).options]
    assert rates == ["", "8000", "12000", "16000", "24000", "48000"]  # only what Opus codes
    Select(d.find_element(By.ID, "sample_rate")).select_by_value("48000")
    Select(d.find_element(By.ID, "loudness")).select_by_value("-16")
    Select(d.find_element(By.ID, "subtitles")).select_by_value("both")
    d.find_element(By.ID, "stream_segments").click()
    d.find_element(By.CSS_SELECTOR, "#advanced summary").click()
    set_value(d, d.find_element(By.ID, "max_text_tokens_per_segment"), "20")  # 4 segments of 5 words or fewer
    d.find_element(By.ID, "submit").click()

    # While the job runs: the timeline grows with text and times, and the first piece plays.
    def running_rows(d: WebDriver) -> list[str] | None:
        state = d.find_element(By.ID, "job-state").text
        rows = [li.text for li in d.find_elements(By.CSS_SELECTOR, "#timeline li")]
        return rows if state == "running" and rows else None

    rows = wait_for(d, running_rows, 30, "timeline rows while running")
    assert "one two three four five" in rows[0] and "0.00–" in rows[0], rows
    player = d.find_element(By.ID, "stream-player")
    wait_for(d, lambda d: "/api/pieces/" in (player.get_attribute("src") or ""), 20, "a piece on the live player")
    shot(d, "console-stream-running.png")

    wait_for(d, lambda d: d.find_element(By.ID, "job-state").text == "done", 60, "result")
    rid = d.find_element(By.ID, "job-id").text
    job = console.api(f"api/requests/{rid}")
    n = job["result"]["segments"]
    assert n == 4 and len(job["timeline"]) == n and all(t["audio_url"] for t in job["timeline"])
    # Every piece played, in order, each fetched through the console and decodable.
    wait_for(d, lambda d: player.get_attribute("data-played") == str(n), 30, "all pieces played")
    assert player.get_attribute("data-order") == ",".join(str(i) for i in range(1, n + 1))
    for t in job["timeline"]:
        with urllib.request.urlopen(console.url + t["audio_url"], timeout=10) as r:
            assert r.headers["Content-Type"] == "audio/ogg"
            assert decode(r.read()).codec == "opus"
    assert "opus · 48000 Hz · mono · 32 kbit/s" in d.find_element(By.ID, "result-format").text
    assert "LUFS" in d.find_element(By.ID, "result-format").text
    links = {a.get_attribute("data-format"): a.get_attribute("href")
             for a in d.find_elements(By.CSS_SELECTOR, "#result-subtitles a")}
    assert set(links) == {"srt", "vtt"}
    with urllib.request.urlopen(links["vtt"], timeout=10) as r:
        assert r.read().startswith(b"WEBVTT")
    assert len(d.find_elements(By.CSS_SELECTOR, "#timeline li")) == n
    shot(d, "console-stream-done.png")
