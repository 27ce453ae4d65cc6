"""`tts-processor doctor`: check an installation and its connections, one pass/fail line each, with hints.

It checks what a worker needs before it can serve: the Python and key packages, the GPU (optional: a
warning when absent), the IndexTTS2 model directory (every file its ``config.yaml`` names), the
Hugging Face hub cache of the auxiliary models, Kafka and the five topics, the S3 bucket (a real
put/get/delete of a probe object) and, when ``SCHEMA_REGISTRY_URL`` is set, the compatibility of our
Avro schemas with what the registry holds. The exit status is 1 when any required check fails.

Nothing here changes state except the probe object, which is deleted again.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from processor.config import Settings

Status = Literal["pass", "warn", "fail", "skip"]
LABEL: dict[Status, str] = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}

INDEXTTS2_ENGINES = frozenset({"processor.engine.loader:indextts2", "processor.engine.indextts2:IndexTTS2Engine"})
INDEXTTS25_ENGINES = frozenset({"processor.engine.loader:indextts25", "processor.engine.indextts25:IndexTTS25Engine"})
PRODUCT_ENGINE = "processor.engine.loader:product"  # loads the family INDEX_TTS_FAMILY names
MIN_PYTHON = (3, 11)

# Distribution name -> needed by whom. "core" always; "engine" only for the IndexTTS2 engine.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("confluent-kafka", "core"),
    ("fastavro", "core"),
    ("boto3", "core"),
    ("pydantic", "core"),
    ("pydantic-settings", "core"),
    ("numpy", "core"),
    ("soundfile", "core"),
    ("soxr", "core"),
    ("pyloudnorm", "core"),
    ("torch", "engine"),
    ("torchaudio", "engine"),
    ("indextts2-inference", "engine"),
    ("indextts25-inference", "engine25"),
    ("transformers", "engine"),
    ("huggingface-hub", "engine"),
    ("starlette", "console"),
    ("uvicorn", "console"),
)

# config.yaml keys naming files inside the model dir (dotted for nested keys).
MODEL_FILE_KEYS: tuple[str, ...] = (
    "gpt_checkpoint", "s2mel_checkpoint", "dataset.bpe_model", "w2v_stat", "emo_matrix", "spk_matrix",
)
QWEN_KEY = "qwen_emo_path"

# Hub repos IndexTTS2 downloads at load time, and the files it reads from each. Alternatives are
# separated by "|" (either one is enough).
HUB_FILES: dict[str, tuple[str, ...]] = {
    "facebook/w2v-bert-2.0": ("config.json", "preprocessor_config.json", "model.safetensors|pytorch_model.bin"),
    "amphion/MaskGCT": ("semantic_codec/model.safetensors",),
    "funasr/campplus": ("campplus_cn_common.bin",),
    "nvidia/bigvgan_v2_22khz_80band_256x": ("config.json", "bigvgan_generator.pt"),
}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    hint: str = ""

    def line(self) -> str:
        out = f"{LABEL[self.status]}  {self.name:<24} {self.detail}"
        if self.hint and self.status in ("fail", "warn"):
            out += f"\n      hint: {self.hint}"
        return out


# ------------------------------------------------------------------------------------ environment


def check_python() -> list[Check]:
    v = sys.version_info
    text = f"{platform.python_version()} ({sys.executable})"
    if (v.major, v.minor) < MIN_PYTHON:
        return [Check("python", "fail", text, f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ is required")]
    return [Check("python", "pass", text)]


def check_packages(engine_needed: bool, family: str | None = "indextts2") -> list[Check]:
    out: list[Check] = []
    for dist, role in PACKAGES:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            required = role == "core" or (role == "engine" and engine_needed and family != "indextts2.5") or (
                role == "engine25" and engine_needed and family == "indextts2.5")
            status: Status = "fail" if required else "warn"
            why = {"core": "every command needs it", "engine": "the IndexTTS2 engine needs it",
                   "engine25": "the IndexTTS-2.5 engine needs it",
                   "console": "`tts-processor console` needs it"}[role]
            out.append(Check(dist, status, "not installed", f"{why}: `uv sync` (or pip install {dist})"))
            continue
        out.append(Check(dist, "pass", version))
    return out


def check_audio() -> list[Check]:
    """Which output formats this build encodes: each encoder runs once, as the worker does at start."""
    try:
        import soundfile

        from processor.audio import FORMATS, encoder_problems
    except Exception as exc:  # a missing native library shows up here, not as a package  # noqa: BLE001
        return [Check("audio formats", "fail", f"cannot load the encoders: {type(exc).__name__}: {exc}"[:300],
                      "`uv sync`; soundfile's wheel bundles libsndfile with FLAC, Opus and MP3")]
    bad = encoder_problems()
    ok = [f for f in FORMATS if f not in bad]
    lib = f"libsndfile {soundfile.__libsndfile_version__}"
    if not bad:
        return [Check("audio formats", "pass", f"{', '.join(ok)}; loudness (BS.1770) and soxr resampling; {lib}")]
    refused = "; ".join(f"{f}: {why}" for f, why in bad.items())
    return [Check("audio formats", "warn", f"offers {', '.join(ok) or 'nothing'}; refuses {refused}"[:400],
                  f"requests for these get error unsupported_format; {lib} needs FLAC/Opus/LAME support "
                  "(the soundfile wheel has it; a system libsndfile may not)")]


def check_gpu(settings: Settings) -> list[Check]:
    wants_cuda = settings.engine.device.startswith("cuda")
    try:
        import torch
    except Exception as exc:  # torch missing is already a package line; say why the GPU is unknown  # noqa: BLE001
        return [Check("gpu", "fail" if wants_cuda else "warn", f"cannot import torch: {type(exc).__name__}")]
    try:
        available = bool(torch.cuda.is_available())
        if available:
            n = torch.cuda.device_count()
            names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
            _, total = torch.cuda.mem_get_info()
            return [Check("gpu", "pass", f"CUDA {torch.version.cuda}: {n} device(s): {names}; "
                                         f"{total / 1024**3:.1f} GiB on device 0")]
    except Exception as exc:  # noqa: BLE001 (the doctor reports every failure as a finding)
        return [Check("gpu", "fail" if wants_cuda else "warn", f"CUDA query failed: {exc}"[:300],
                      "check the NVIDIA driver (nvidia-smi) and that the container sees the GPU")]
    hint = ("CUDA_VISIBLE_DEVICES, the NVIDIA driver and the container runtime decide what is visible; "
            "without a GPU the worker runs on CPU (slow)")
    if wants_cuda:
        return [Check("gpu", "fail", f"INDEX_TTS_DEVICE={settings.engine.device} but CUDA is not available", hint)]
    built = getattr(torch.version, "cuda", None)
    return [Check("gpu", "warn", f"no CUDA device visible (torch {torch.__version__}, "
                                 f"{'built with CUDA ' + built if built else 'CPU-only build'})", hint)]


# ------------------------------------------------------------------------------------------ model


def _dig(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load_model_config(model_dir: Path) -> dict[str, Any]:
    import yaml

    with (model_dir / "config.yaml").open() as fh:
        loaded = yaml.safe_load(fh)
    if not isinstance(loaded, dict):
        raise ValueError("config.yaml is not a mapping")
    return loaded


def check_model_dir(settings: Settings) -> tuple[list[Check], dict[str, Any] | None]:
    model_dir = Path(settings.engine.model_dir).expanduser()
    hint_dir = ("set INDEX_TTS_MODEL_DIR to the IndexTTS-2 checkpoint directory "
                "(e.g. `hf download IndexTeam/IndexTTS-2 --local-dir checkpoints`)")
    # With INDEX_TTS_AUTO_DOWNLOAD the worker fetches a missing checkpoint itself at start-up.
    absent: Status = "warn" if settings.engine.auto_download else "fail"
    later = "; INDEX_TTS_AUTO_DOWNLOAD will fetch it at start" if settings.engine.auto_download else ""
    if not model_dir.is_dir():
        return [Check("model dir", absent, f"{model_dir} does not exist{later}", hint_dir)], None
    if not (model_dir / "config.yaml").is_file():
        return [Check("model dir", absent, f"no config.yaml in {model_dir}{later}", hint_dir)], None
    try:
        cfg = load_model_config(model_dir)
    except Exception as exc:  # noqa: BLE001 (the doctor reports every failure as a finding)
        return [Check("model config", "fail", f"{model_dir / 'config.yaml'} unreadable: {exc}"[:300],
                      "re-download config.yaml from the model repository")], None
    out: list[Check] = []
    present: list[str] = []
    hint_file = "the download is incomplete: fetch the missing file from the model repository into the model dir"
    for key in MODEL_FILE_KEYS:
        name = _dig(cfg, key)
        if not isinstance(name, str) or not name:
            out.append(Check("model file", "fail", f"config.yaml does not name `{key}`",
                             "config.yaml is not an IndexTTS-2 config"))
            continue
        path = model_dir / name
        if not path.is_file():
            out.append(Check("model file", "fail", f"{key}: {path} is missing", hint_file))
        elif path.stat().st_size == 0:
            out.append(Check("model file", "fail", f"{key}: {path} is empty", hint_file))
        else:
            present.append(name)
    qwen = _dig(cfg, QWEN_KEY)
    if not isinstance(qwen, str) or not qwen:
        out.append(Check("model file", "fail", f"config.yaml does not name `{QWEN_KEY}`",
                         "config.yaml is not an IndexTTS-2 config"))
    else:
        qdir = model_dir / qwen
        weights = [p for pat in ("*.safetensors", "*.bin") for p in qdir.glob(pat)] if qdir.is_dir() else []
        missing = [f for f in ("config.json", "tokenizer_config.json") if not (qdir / f).is_file()]
        if not qdir.is_dir():
            out.append(Check("model file", "fail", f"{QWEN_KEY}: emotion model dir {qdir} is missing", hint_file))
        elif missing or not weights:
            what = ", ".join(missing + ([] if weights else ["weights (*.safetensors)"]))
            out.append(Check("model file", "fail", f"{QWEN_KEY}: {qdir} lacks {what}", hint_file))
        else:
            present.append(qwen.rstrip("/") + "/")
    if not [c for c in out if c.status == "fail"]:
        version = cfg.get("version", "?")
        out.insert(0, Check("model dir", "pass", f"{model_dir}: config.yaml (version {version}) and all "
                                                 f"{len(present)} files it names: {', '.join(present)}"))
    else:
        out.insert(0, Check("model dir", "fail", f"{model_dir}: {len(present)} of {len(MODEL_FILE_KEYS) + 1} "
                                                 f"files named by config.yaml present"))
    return out, cfg


# IndexTTS-2.5: config.yaml keys naming files, the files it reads by fixed name, and its auxiliary models
# (read from <model dir>/hf_cache/ when there, else from the hub cache).
MODEL25_FILE_KEYS: tuple[str, ...] = ("gpt_checkpoint", "s2mel_checkpoint", "w2v_stat", "emo_matrix", "spk_matrix")
MODEL25_FIXED_FILES: tuple[str, ...] = ("codec.pth", "multilingual_zh_ja_yue_char_del.tiktoken")
HUB25_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "facebook/w2v-bert-2.0": ("w2v-bert-2.0", ("config.json", "preprocessor_config.json", "model.safetensors")),
    "funasr/campplus": ("", ("campplus_cn_common.bin",)),
    "nvidia/bigvgan_v2_22khz_80band_256x": ("bigvgan", ("config.json", "bigvgan_generator.pt")),
}


def check_model_dir25(settings: Settings) -> list[Check]:
    """IndexTTS-2.5's checkpoint layout: every file its config.yaml names, codec.pth and the tokenizer."""
    model_dir = Path(settings.engine.model_dir).expanduser()
    hint_dir = ("set INDEX_TTS_MODEL_DIR to the IndexTTS-2.5 checkpoint directory (e.g. `hf download "
                "IndexTeam/IndexTTS-2.5 --local-dir checkpoints --exclude 'qwen0.6bemo4-merge/*'`)")
    absent: Status = "warn" if settings.engine.auto_download else "fail"
    if not (model_dir / "config.yaml").is_file():
        return [Check("model dir", absent, f"no config.yaml in {model_dir}", hint_dir)]
    try:
        cfg = load_model_config(model_dir)
    except Exception as exc:  # noqa: BLE001 (the doctor reports every failure as a finding)
        return [Check("model config", "fail", f"{model_dir / 'config.yaml'} unreadable: {exc}"[:300], hint_dir)]
    names: list[str] = []
    out: list[Check] = []
    for key in MODEL25_FILE_KEYS:
        name = _dig(cfg, key)
        if not isinstance(name, str) or not name:
            out.append(Check("model file", "fail", f"config.yaml does not name `{key}`",
                             "config.yaml is not an IndexTTS-2.5 config"))
        else:
            names.append(name)
    hint_file = "the download is incomplete: fetch the missing file from the model repository into the model dir"
    present = []
    for name in [*names, *MODEL25_FIXED_FILES]:
        path = model_dir / name
        if not path.is_file() or path.stat().st_size == 0:
            out.append(Check("model file", "fail", f"{path} is missing or empty", hint_file))
        else:
            present.append(name)
    if not out:
        out.insert(0, Check("model dir", "pass", f"{model_dir}: IndexTTS-2.5 config.yaml (version "
                                                 f"{cfg.get('version', '?')}) and {', '.join(present)}"))
    hub = hub_cache_dir(settings)
    for repo, (local, files) in HUB25_FILES.items():
        local_dir = model_dir / "hf_cache" / local
        if all((local_dir / f).is_file() for f in files):
            out.append(Check(f"aux {repo}", "pass", f"{local_dir} (model dir hf_cache)"))
            continue
        snap = _snapshot(hub, repo)
        if snap is not None and all((snap / f).is_file() and (snap / f).stat().st_size > 0 for f in files):
            out.append(Check(f"aux {repo}", "pass", f"{snap}"))
        else:
            out.append(Check(f"aux {repo}", "warn" if settings.engine.auto_download else "fail",
                             f"neither {local_dir} nor the hub cache {hub} has {', '.join(files)}",
                             "the IndexTTS-2.5 download ships them in hf_cache/; or prefetch the repo into HF_HOME"))
    return out


def hub_cache_dir(settings: Settings) -> Path:
    """Where huggingface_hub looks: HF_HUB_CACHE, else <HF_HOME>/hub, else ~/.cache/huggingface/hub."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = settings.engine.hf_home or os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _snapshot(hub: Path, repo: str) -> Path | None:
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((repo_dir / "snapshots").glob("*")) if (repo_dir / "snapshots").is_dir() else []
    return snaps[-1] if snaps else None


def check_hub_cache(settings: Settings, cfg: dict[str, Any] | None) -> list[Check]:
    hub = hub_cache_dir(settings)
    repos = dict(HUB_FILES)
    vocoder = _dig(cfg or {}, "vocoder.name")
    if isinstance(vocoder, str) and vocoder and vocoder not in repos:
        repos = {k: v for k, v in repos.items() if not k.startswith("nvidia/bigvgan")}
        repos[vocoder] = ("config.json", "bigvgan_generator.pt")
    auto = settings.engine.auto_download
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    out: list[Check] = []
    for repo, files in repos.items():
        snap = _snapshot(hub, repo)
        missing = []
        for spec in files:
            alternatives = spec.split("|")
            if snap is None or not any((snap / f).is_file() and (snap / f).stat().st_size > 0 for f in alternatives):
                missing.append(" or ".join(alternatives))
        if not missing:
            out.append(Check(f"hf {repo}", "pass", f"{snap}"))
            continue
        where = f"not in {hub}" if snap is None else f"{snap} lacks {', '.join(missing)}"
        hint = (f"HF_HOME={hub.parent}: prefetch with `hf download {repo}` on a machine with network, "
                "or point HF_HOME at a cache that has it")
        if auto and not offline:
            out.append(Check(f"hf {repo}", "warn", f"{where}; INDEX_TTS_AUTO_DOWNLOAD will fetch it at start", hint))
        else:
            out.append(Check(f"hf {repo}", "fail", where, hint))
    return out


# ------------------------------------------------------------------------------------------ kafka


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("tts.doctor.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def check_kafka(settings: Settings, min_partitions: int | None, timeout: float) -> list[Check]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    k = settings.kafka
    conf = {**k.librdkafka_common(), "logger": _quiet_logger(), "socket.connection.setup.timeout.ms": 5000}
    admin = AdminClient(conf)
    t0 = time.monotonic()
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        reason = getattr(err, "str", lambda: str(err))()
        return [
            Check("kafka", "fail", f"{k.bootstrap_servers} not reachable within {timeout:.0f}s: {reason}"[:300],
                  "check KAFKA_BOOTSTRAP_SERVERS, that the brokers run, and KAFKA_SECURITY_PROTOCOL/SASL settings"),
            Check("kafka topics", "skip", "Kafka unreachable"),
        ]
    brokers = len(md.brokers)
    out = [Check("kafka", "pass", f"{k.bootstrap_servers}: {brokers} broker(s), cluster {md.cluster_id or '?'}, "
                                  f"{(time.monotonic() - t0) * 1000:.0f} ms")]
    need_p = min_partitions or 1
    expect = {k.request_topic: need_p, k.result_topic: need_p, k.progress_topic: need_p,
              k.health_topic: 1, k.dlq_topic: 1}
    have_requests = len(md.topics[k.request_topic].partitions) if k.request_topic in md.topics else 0
    for topic, minimum in expect.items():
        meta = md.topics.get(topic)
        if meta is None or (meta.error is not None and meta.error.code() != 0 and not meta.partitions):
            out.append(Check("kafka topic", "fail", f"{topic} does not exist",
                             "create the topics with `tts-processor setup --partitions N` "
                             "(or check the KAFKA_*_TOPIC names)"))
            continue
        n = len(meta.partitions)
        if n < minimum:
            out.append(Check("kafka topic", "fail", f"{topic} has {n} partition(s), expected at least {minimum}",
                             "add partitions (kafka-topics --alter --partitions N); requests need one per GPU"))
            continue
        note = ""
        if topic in (k.result_topic, k.progress_topic) and n < have_requests:
            note = f" (fewer than the {have_requests} request partitions: fine, but uneven)"
        out.append(Check("kafka topic", "pass", f"{topic}: {n} partition(s){note}"))
    return out


# --------------------------------------------------------------------------------------------- s3


def check_s3(settings: Settings, timeout: float) -> list[Check]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from processor.errors import TtsError
    from processor.storage import Storage, s3_client

    s = settings.s3
    client = s3_client(s, connect_timeout=min(timeout, 5.0), read_timeout=timeout)
    where = s.endpoint_url or f"AWS S3 ({s.region})"
    bucket = s.bucket

    def code(exc: ClientError) -> str:
        return str(exc.response.get("Error", {}).get("Code", "") or exc.response.get("ResponseMetadata", {})
                   .get("HTTPStatusCode", "?"))

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        c = code(exc)
        if c in ("404", "NoSuchBucket", "NotFound"):
            return [Check("s3 bucket", "fail", f"bucket {bucket} does not exist at {where}",
                          "create it with `tts-processor setup` (or set S3_BUCKET to an existing bucket)")]
        if c in ("403", "AccessDenied", "Forbidden"):
            return [Check("s3 bucket", "fail", f"access to bucket {bucket} denied at {where}",
                          "check S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY (or the pod's IAM role) and the bucket policy")]
        return [Check("s3 bucket", "fail", f"bucket {bucket} at {where}: {c}", "check S3_ENDPOINT_URL and S3_REGION")]
    except NoCredentialsError:
        return [Check("s3", "fail", f"no S3 credentials for {where}",
                      "set S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY (or AWS_*), or give the pod an IAM role")]
    except BotoCoreError as exc:
        return [Check("s3", "fail", f"{where} not reachable: {type(exc).__name__}: {exc}"[:300],
                      "check S3_ENDPOINT_URL, the network path and TLS settings (S3_VERIFY_TLS, S3_CA_BUNDLE)")]
    out = [Check("s3 bucket", "pass", f"{bucket} at {where}")]
    key = f".doctor/probe-{uuid.uuid4().hex}"
    body = f"tts-processor doctor probe {time.time()}".encode()
    step = f"put ({s.writer})"
    try:
        # Through the writer the worker stores results with (S3_WRITER), configured as the worker's is.
        writer = s.model_copy(update={"connect_timeout_seconds": min(timeout, 5.0), "call_timeout_seconds": timeout})
        Storage(writer).put(bucket, key, body, content_type="text/plain", metadata={})
        step = "get"
        got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        if got != body:
            raise ValueError("read back different bytes")
        step = "delete"
        client.delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError, ValueError, TtsError) as exc:
        detail = (code(exc) if isinstance(exc, ClientError) else exc.message if isinstance(exc, TtsError)
                  else f"{type(exc).__name__}: {exc}")
        return [*out, Check("s3 permissions", "fail", f"{step} of s3://{bucket}/{key} failed: {detail}"[:300],
                            "workers need s3:PutObject, s3:GetObject and s3:DeleteObject (for this probe) "
                            "on the bucket")]
    out.append(Check("s3 permissions", "pass", f"put ({s.writer}), get and delete of a probe object in {bucket}"))
    return out


# ------------------------------------------------------------------------------------ schemas


_PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"},
               "string": {"bytes"}, "bytes": {"string"}}


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, dict):
        return str(t.get("name") or t.get("type"))
    return "union"


def can_read(writer: Any, reader: Any, path: str = "") -> list[str]:
    """Avro schema resolution: the problems a ``reader`` schema has reading ``writer`` data (empty = fine)."""
    if isinstance(writer, list):  # every writer branch must be readable
        return [p for branch in writer for p in can_read(branch, reader, path)][:5]
    if isinstance(reader, list):
        for branch in reader:
            if not can_read(writer, branch, path):
                return []
        return [f"{path or 'value'}: writer type {_type_name(writer)} matches no branch of the reader union"]
    wt = writer if isinstance(writer, str) else writer.get("type")
    rt = reader if isinstance(reader, str) else reader.get("type")
    if isinstance(wt, dict | list):
        return can_read(wt, reader, path)
    if isinstance(rt, dict | list):
        return can_read(writer, rt, path)
    if wt != rt:
        if rt in _PROMOTIONS.get(str(wt), set()):
            return []
        return [f"{path or 'value'}: {wt} cannot be read as {rt}"]
    if wt == "record":
        problems: list[str] = []
        wfields = {f["name"]: f for f in writer.get("fields", [])}
        for f in reader.get("fields", []):
            name = f["name"]
            src = wfields.get(name) or next((wfields[a] for a in f.get("aliases", []) if a in wfields), None)
            if src is None:
                if "default" not in f:
                    problems.append(f"{f'{path}.' if path else ''}{name}: new field without a default")
                continue
            problems += can_read(src["type"], f["type"], f"{path}.{name}" if path else name)
        return problems
    if wt == "enum":
        missing = set(writer.get("symbols", [])) - set(reader.get("symbols", []))
        if missing and "default" not in reader:
            return [f"{path or 'value'}: enum symbols {sorted(missing)} unknown to the reader"]
        return []
    if wt == "array":
        return can_read(writer["items"], reader["items"], f"{path}[]")
    if wt == "map":
        return can_read(writer["values"], reader["values"], f"{path}{{}}")
    if wt == "fixed" and writer.get("size") != reader.get("size"):
        return [f"{path or 'value'}: fixed size {writer.get('size')} != {reader.get('size')}"]
    return []


def check_schema_registry(settings: Settings, client: Any = None) -> list[Check]:
    url = settings.schema_registry_url
    if not url and client is None:
        return [Check("schema registry", "skip", "SCHEMA_REGISTRY_URL not set: records use single-object "
                                                 "encoding, no registry needed")]
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from processor.wire import SCHEMA_TOPICS, schema_json, topic_of

    if client is None:
        client = SchemaRegistryClient.new_client({"url": url})
    subjects = {name: topic_of(name, settings.kafka) for name in SCHEMA_TOPICS}
    out: list[Check] = []
    for name, topic in subjects.items():
        subject = f"{topic}-value"
        ours = schema_json(name)
        try:
            latest = client.get_latest_version(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                out.append(Check("schema", "pass", f"{subject}: not registered yet (the first writer registers "
                                                   f"{name})"))
                continue
            out.append(Check("schema registry", "fail", f"{url}: {exc}"[:300],
                             "check SCHEMA_REGISTRY_URL and its credentials"))
            return out
        except Exception as exc:  # noqa: BLE001 (the doctor reports every failure as a finding)
            out.append(Check("schema registry", "fail", f"{url} not reachable: {type(exc).__name__}: {exc}"[:300],
                             "check SCHEMA_REGISTRY_URL and the network path to it"))
            return out
        theirs = json.loads(latest.schema.schema_str or "null")
        problems = can_read(theirs, ours) + can_read(ours, theirs)
        if not problems and ours != theirs:
            # Ask the registry too (its compatibility level may be stricter); a registry without the
            # endpoint (or a mock) leaves our own resolution check as the verdict.
            try:
                if not client.test_compatibility(subject, Schema(json.dumps(ours), "AVRO")):
                    problems = ["the registry's compatibility rule rejects our schema"]
            except Exception:  # noqa: BLE001, S110 (see above: our own check stands)
                pass
        version = f"version {latest.version}, id {latest.schema_id}"
        if problems:
            out.append(Check("schema", "fail", f"{subject} ({version}) is incompatible with schemas/{name}.avsc: "
                                               f"{'; '.join(problems[:3])}",
                             "evolve the schema compatibly (new fields need defaults) or migrate the subject"))
        else:
            same = "identical" if ours == theirs else "compatible both ways"
            out.append(Check("schema", "pass", f"{subject} ({version}): {same}"))
    return out


# ------------------------------------------------------------------------------------------- main


def engine_family(settings: Settings) -> str | None:
    """The model family the configured engine loads (None: a stand-in engine)."""
    name = settings.engine.engine.strip()
    if name == PRODUCT_ENGINE:
        return settings.engine.family
    if name in INDEXTTS2_ENGINES:
        return "indextts2"
    if name in INDEXTTS25_ENGINES:
        return "indextts2.5"
    return None


def engine_is_indextts2(settings: Settings) -> bool:
    """A product engine (IndexTTS2 or IndexTTS-2.5, through the loader or the engine class itself)."""
    return engine_family(settings) is not None


def run_checks(settings: Settings, *, min_partitions: int | None = None, timeout: float = 10.0,
               emit: Callable[[Check], None] | None = None) -> list[Check]:
    results: list[Check] = []

    def add(checks: Iterable[Check]) -> None:
        for c in checks:
            results.append(c)
            if emit is not None:
                emit(c)

    family = engine_family(settings)
    indextts = family is not None
    add(check_python())
    add(check_packages(indextts, family))
    add(check_audio())
    add(check_gpu(settings))
    if family == "indextts2.5":
        add(check_model_dir25(settings))
    elif indextts:
        model_checks, cfg = check_model_dir(settings)
        add(model_checks)
        add(check_hub_cache(settings, cfg))
    else:
        why = f"INDEX_TTS_ENGINE={settings.engine.engine} is not the IndexTTS2 engine"
        add([Check("model dir", "skip", why), Check("hf hub cache", "skip", why)])
    add(check_kafka(settings, min_partitions, timeout))
    add(check_s3(settings, timeout))
    add(check_schema_registry(settings))
    return results


def main(settings: Settings, *, min_partitions: int | None = None, timeout: float = 10.0,
         out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    family = engine_family(settings)
    print(f"tts-processor doctor ({settings.engine.engine}{f', family {family}' if family else ''})", file=stream,
          flush=True)
    results = run_checks(settings, min_partitions=min_partitions, timeout=timeout,
                         emit=lambda c: print(c.line(), file=stream, flush=True))
    counts = {s: sum(1 for c in results if c.status == s) for s in LABEL}
    failed = counts["fail"]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"{'FAILED' if failed else 'OK'}: {summary}", file=stream, flush=True)
    return 1 if failed else 0
