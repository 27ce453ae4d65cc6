"""The main job end to end: local Kafka + S3, one IndexTTS2 worker, one request, its result.

Run through `bash scripts/demo.sh` (installs first). Steps: start the stack → create topics and the
bucket → register a voice preset → start `tts-processor run` → submit a request → print the result
event and where the WAV is → stop everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devstack.clips import voice_clip

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / ".cache" / "tiny-model"
TINY25 = ROOT / ".cache" / "tiny-model25"


def choose_model() -> dict[str, str]:
    from processor.engine.loader import missing_files

    # INDEX_TTS_FAMILY picks the model, as for the worker: indextts2 (default) or indextts2.5.
    family = os.environ.get("INDEX_TTS_FAMILY", "indextts2")
    name, tiny = ("IndexTTS-2.5", TINY25) if family == "indextts2.5" else ("IndexTTS-2", TINY)
    model_dir = Path(os.environ.get("INDEX_TTS_MODEL_DIR", ROOT / "checkpoints"))
    auto = os.environ.get("INDEX_TTS_AUTO_DOWNLOAD", "false").lower() in ("1", "true", "yes")
    if not missing_files(model_dir, family) or auto:
        print(f"model: {name} weights from {model_dir}" + (" (auto-download on)" if auto else ""))
        return {"INDEX_TTS_MODEL_DIR": str(model_dir), "INDEX_TTS_FAMILY": family}
    print("\n" + "!" * 78)
    print(f"! No {name} weights in {model_dir} and INDEX_TTS_AUTO_DOWNLOAD is off.")
    print(f"! Running the REAL {name} code on the TINY RANDOM model built by scripts/install.sh:")
    print("! every stage runs, but the audio is NOISE, not speech.")
    print("!" * 78 + "\n")
    return {"INDEX_TTS_MODEL_DIR": str(tiny), "HF_HOME": str(tiny / "hf"), "HF_HUB_OFFLINE": "1",
            "INDEX_TTS_FAMILY": family, "INDEX_TTS_DEVICE": os.environ.get("INDEX_TTS_DEVICE", "auto")}


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.stdout.write(log.read_text(errors="replace")[-3000:])
            raise SystemExit(f"worker exited with {proc.returncode} (log: {log})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"worker not ready after {timeout:.0f}s (log: {log})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default="Hello from the Kafka speech processor. 你好，欢迎使用语音合成。")
    ap.add_argument("--keep", action="store_true", help="leave the stack and worker running until Ctrl-C")
    args = ap.parse_args()
    # SIGTERM (a CI timeout, `kill`) must unwind like Ctrl-C so the worker and the servers stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from devstack.stack import LocalStack, free_port

    out = ROOT / "artifacts" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    with LocalStack() as stack:
        env = {**os.environ, **stack.env("tts-audio"), **choose_model(), "WORKER_ID": "demo-worker-0",
               "PYTHONUNBUFFERED": "1"}
        print(f"stack: Kafka {stack.kafka_bootstrap}, S3 {stack.s3_endpoint}")
        cli = [sys.executable, "-m", "processor.cli"]
        subprocess.run([*cli, "setup", "--partitions", "4"], env=env, check=True, cwd=ROOT)
        clip = out / "demo_voice.wav"
        clip.write_bytes(voice_clip(seconds=3.0, f0=150.0))
        subprocess.run([*cli, "voices", "add", "demo_voice", str(clip), "--description",
                        "synthetic harmonic voice made by the demo", "--language", "en"],
                       env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        port = free_port()
        log = out / "worker.log"
        print(f"worker: starting (log: {log}); loading the model and warming up...")
        worker = subprocess.Popen([*cli, "run"], env={**env, "HTTP_PORT": str(port)}, cwd=ROOT,
                                  stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(port, worker, log)
            print(f"worker: ready (http://127.0.0.1:{port}/readyz, /metrics)")
            t0 = time.monotonic()
            done = subprocess.run([*cli, "submit", "--request-id", f"demo-{int(time.time())}", "--voice",
                                   "demo_voice", "--text", args.text, "--wait", "--timeout", "600"],
                                  env=env, cwd=ROOT, capture_output=True, text=True)
            sys.stderr.write(done.stderr)
            if done.returncode != 0 or not done.stdout.strip():
                print(done.stdout)
                print(f"demo FAILED (see {log})")
                return 1
            import json

            result = json.loads(done.stdout)
            print("\nresult event (tts.results, read_committed):")
            print(json.dumps(result, indent=2, ensure_ascii=False))
            wav = out / f"{result['request_id']}.wav"
            wav.write_bytes(stack.s3_client().get_object(Bucket=result["output_bucket"],
                                                         Key=result["output_key"])["Body"].read())
            print(f"\nWAV: {result['output_uri']} ({result['duration_seconds']:.2f}s at {result['sample_rate']} Hz, "
                  f"sha256 {result['sha256'][:12]}…) — copied to {wav}; round trip {time.monotonic() - t0:.1f}s")
            if args.keep:
                print("\nstack and worker keep running; Ctrl-C to stop. Env for other shells:")
                for k, v in stack.env("tts-audio").items():
                    print(f"export {k}={v}")
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            return 0
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
