"""The local stack of real servers: one Kafka 4.x broker (KRaft), one S3-compatible server and, on
request, a Confluent-API Schema Registry (devstack/registry.py).

Used by the demo, the integration tests, the chaos test and the benchmarks::

    with LocalStack() as stack:
        stack.create_topics({"tts.requests": 4})
        stack.create_bucket("tts-audio")
        subprocess.run([...worker...], env={**os.environ, **stack.env()})
        stack.kafka.restart(hard=True)   # kill -9, same port, same data
        stack.s3.stop(); ...; stack.s3.start()

Each service comes from the first of these that applies (chosen per service):

1. ``external``: ``KAFKA_BOOTSTRAP_SERVERS`` / ``S3_ENDPOINT_URL`` already set -> used as they are
   (credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``); never started or stopped.
2. ``docker``: a Docker engine answers ``docker info`` -> testcontainers (``apache/kafka``, MinIO).
3. ``local``: Java processes from Apache's Kafka jars and S3Proxy, both from Maven Central, fetched
   once into ``.cache/jars`` (``python -m devstack.stack fetch``).

The schema registry starts only when asked (``stack.start_registry()``, ``up --registry``): it is
external when ``SCHEMA_REGISTRY_URL`` is set, else a local Apicurio Registry process (in every other
mode, Docker included), built once from Maven Central by ``fetch`` into ``.cache/jars/registry``.

``DEVSTACK_MODE=external|docker|local`` forces a path. Logs (and data, while running) live under
``.stack/<run>/``; the logs are kept after the run and their tails are printed if startup fails.

CLI::

    python -m devstack.stack fetch      # download the jars, build the registry (install step)
    python -m devstack.stack up         # start, create topics + bucket, print exports, wait
    python -m devstack.stack up --registry   # ... and a schema registry (exports SCHEMA_REGISTRY_URL)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from mypy_boto3_s3 import S3Client

    from devstack.registry import RegistryServer

log = logging.getLogger("devstack.stack")

REPO_ROOT = Path(__file__).resolve().parents[1]
MAVEN_DIR = Path(__file__).resolve().parent / "maven"
JARS_DIR = Path(os.environ.get("DEVSTACK_JARS_DIR", REPO_ROOT / ".cache" / "jars"))
STACK_DIR = Path(os.environ.get("DEVSTACK_STACK_DIR", REPO_ROOT / ".stack"))

KAFKA_VERSION = "4.1.1"  # keep in step with devstack/maven/kafka/pom.xml
S3PROXY_VERSION = "3.0.0"  # keep in step with devstack/maven/s3proxy/pom.xml
KAFKA_IMAGE = os.environ.get("DEVSTACK_KAFKA_IMAGE", f"apache/kafka:{KAFKA_VERSION}")
MINIO_IMAGE = os.environ.get("DEVSTACK_MINIO_IMAGE", "minio/minio:RELEASE.2025-04-22T22-12-26Z")

S3_ACCESS_KEY = "devstack-access-key"
S3_SECRET_KEY = "devstack-secret-key"  # noqa: S105 (the local S3 server's own throwaway key, never used elsewhere)
S3_REGION = "us-east-1"

# What `up` creates: the chart's default names (helm/tts-processor/values.yaml).
DEFAULT_TOPICS: dict[str, int] = {
    "tts.requests": 4,
    "tts.results": 4,
    "tts.progress": 4,
    "tts.health": 1,
    "tts.requests.dlq": 1,
}
DEFAULT_BUCKET = "tts-audio"

ServiceKind = Literal["external", "docker", "local"]

# Broker settings shared by the local process and the container: a single node, so every
# internal topic has one replica, and few partitions so the coordinators load fast.
KAFKA_SINGLE_NODE: dict[str, str] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # KIP-848 is on by default in 4.x; say so explicitly so a config drift fails loudly.
    "group.coordinator.rebalance.protocols": "classic,consumer",
    # Faster dead-member detection than the 45 s default, so chaos tests don't idle.
    "group.consumer.min.session.timeout.ms": "6000",
    "group.consumer.session.timeout.ms": "10000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "1000",
    # After kill -9 the controller refuses the broker's new registration until the old session
    # expires (default 9 s); broker and controller share the process, so short is safe.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "2500",
    "num.network.threads": "2",
    "num.io.threads": "4",
}


class StackError(RuntimeError):
    """A server could not be fetched, started or stopped."""


# --------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: missing)"
    return "\n".join(text[-lines:])


def java_bin() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on PATH, else a JDK under /usr/lib/jvm (17+ needed)."""
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "java")] if home else []
    candidates.append(shutil.which("java") or "")
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise StackError("no Java found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)")


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ------------------------------------------------------------------------------------------ jars


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def jars_dir(name: Literal["kafka", "s3proxy"]) -> Path:
    return JARS_DIR / name


def fetch_jars(force: bool = False) -> dict[str, Path]:
    """Copy the runtime classpaths of Kafka and S3Proxy from Maven Central into ``.cache/jars``.

    Skipped for a set that is complete and fetched from the current pom (a marker holds its hash).
    Maven's own cache (~/.m2) makes a refetch cheap.
    """
    out: dict[str, Path] = {}
    names: tuple[Literal["kafka", "s3proxy"], ...] = ("kafka", "s3proxy")
    for name in names:
        pom = MAVEN_DIR / name / "pom.xml"
        dest = jars_dir(name)
        marker = dest / ".complete"
        digest = _pom_digest(pom)
        if not force and marker.is_file() and marker.read_text().strip() == digest:
            out[name] = dest
            continue
        mvn = shutil.which("mvn")
        if not mvn:
            raise StackError("Maven (mvn) is needed to fetch the jars: apt-get install maven")
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.monotonic()
        log.info("fetching %s jars into %s", name, dest)
        proc = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0 or not any(tmp.glob("*.jar")):
            raise StackError(f"mvn failed for {pom} (rc={proc.returncode}):\n{proc.stdout[-4000:]}"
                             f"\n{proc.stderr[-4000:]}")
        (tmp / ".complete").write_text(digest + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)  # atomic: a half-fetched set is never taken for a complete one
        log.info("fetched %s jars in %.1fs", name, time.monotonic() - t0)
        out[name] = dest
    return out


# ------------------------------------------------------------------------------- java processes

_LIVE: set[JavaServer] = set()
_LIVE_LOCK = threading.Lock()


def _kill_all_at_exit() -> None:
    """Safety net: a stack not closed (crash, forgotten ``close()``) leaves no Java behind."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for s in servers:
        with contextlib.suppress(Exception):
            s.stop(timeout=5)


atexit.register(_kill_all_at_exit)


class JavaServer:
    """One Java server process in its own process group, with its output in a log file.

    ``start()`` / ``stop()`` may be called any number of times; the command (ports, data dir)
    is fixed at construction, so a restarted server comes back on the same port with its data.
    """

    name = "java"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.logs_dir = workdir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_log = self.logs_dir / f"{self.name}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # subclass hooks
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Runs before every start (e.g. format storage the first time)."""

    def probe(self) -> bool:
        """True once the server answers clients."""
        raise NotImplementedError

    def log_files(self) -> list[Path]:
        return [self.stdout_log]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc else None

    def spawn(self) -> None:
        if self.running:
            return
        self.prepare()
        cmd = self.command()
        # PDEATHSIG (via setpriv) kills Java if this Python dies without running atexit (kill -9).
        # It fires when the *thread* that forked exits, so only use it from the main thread.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        with self.stdout_log.open("ab") as out:
            out.write(f"\n=== start #{self.starts + 1} {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n"
                      .encode())
            out.flush()
            # Own session: Ctrl-C in the terminal reaches Python only, which then stops us in order.
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        with _LIVE_LOCK:
            _LIVE.add(self)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                rc = self.proc.returncode if self.proc else None
                raise StackError(f"{self.name} exited during startup (rc={rc})\n{self.diagnostics()}")
            if self.probe():
                return
            time.sleep(0.2)
        self.stop(hard=True)
        raise StackError(f"{self.name} not ready after {timeout:.0f}s\n{self.diagnostics()}")

    def start(self, timeout: float = 90) -> None:
        """Start (no-op if running) and block until the server answers."""
        t0 = time.monotonic()
        self.spawn()
        self.wait_ready(timeout)
        log.info("%s ready in %.1fs (pid %s)", self.name, time.monotonic() - t0, self.pid)

    def stop(self, *, hard: bool = False, timeout: float = 30) -> None:
        """SIGTERM (clean shutdown) then SIGKILL after ``timeout``; ``hard=True``: SIGKILL at once."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGKILL if hard else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs: killing", self.name, timeout)
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=30)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def kill(self) -> None:
        """``kill -9``: no clean shutdown, as in a crash."""
        self.stop(hard=True)

    def restart(self, *, hard: bool = False, down_for: float = 0.0, timeout: float = 90) -> None:
        """Stop (SIGKILL if ``hard``), stay down ``down_for`` seconds, start on the same port/data."""
        self.stop(hard=hard)
        if down_for > 0:
            time.sleep(down_for)
        self.start(timeout=timeout)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def diagnostics(self, lines: int = 40) -> str:
        return "\n".join(f"--- tail of {p}\n{tail(p, lines)}" for p in self.log_files())


class KafkaServer(JavaServer):
    """A single-node KRaft Kafka (combined broker + controller) on 127.0.0.1."""

    name = "kafka"
    managed = True
    kind: ServiceKind = "local"

    def __init__(self, workdir: Path, *, port: int | None = None, controller_port: int | None = None,
                 heap_mb: int = 512, extra_config: Mapping[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap_mb = heap_mb
        self.data_dir = workdir / "kafka-data"
        self.config_file = workdir / "kafka-server.properties"
        self.log4j_file = workdir / "kafka-log4j2.properties"
        self.server_log = self.logs_dir / "kafka-server.log"
        self.extra_config = dict(extra_config or {})
        self._write_config()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **KAFKA_SINGLE_NODE,
            **self.extra_config,
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log4j_file.write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.server_log}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            # Per-request and state-change chatter drowns what matters in a test failure.
            "logger.request.name = kafka.request.logger\n"
            "logger.request.level = WARN\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = WARN\n"
        )

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        return [
            java_bin(), f"-Xmx{heap}", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}", f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp", str(jars_dir("kafka") / "*"), main, *args,
        ]

    def prepare(self) -> None:
        # KRaft needs a formatted log dir (meta.properties + bootstrap metadata.version); only once,
        # so restarts keep the data.
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file),
                         heap="256m")
        # C1 only: the formatter runs for a second, JIT warm-up would be wasted.
        cmd.insert(1, "-XX:TieredStopAtLevel=1")
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.workdir)
        with self.stdout_log.open("a") as f:
            f.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise StackError(f"kafka storage format failed (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def command(self) -> list[str]:
        cmd = self._java("kafka.Kafka", str(self.config_file), heap=f"{self.heap_mb}m")
        cmd.insert(1, f"-Xms{min(self.heap_mb, 256)}m")
        return cmd

    def probe(self) -> bool:
        # TCP first: librdkafka would log every refused connection to stderr.
        return port_open("127.0.0.1", self.port) and kafka_answers(self.bootstrap)

    def log_files(self) -> list[Path]:
        return [self.stdout_log, self.server_log]


class S3ProxyServer(JavaServer):
    """S3Proxy with the filesystem blobstore: data survives ``stop()``/``start()``."""

    name = "s3proxy"
    managed = True
    kind: ServiceKind = "local"

    def __init__(self, workdir: Path, *, port: int | None = None, access_key: str = S3_ACCESS_KEY,
                 secret_key: str = S3_SECRET_KEY) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.access_key = access_key
        self.secret_key = secret_key
        self.data_dir = workdir / "s3-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = workdir / "s3proxy.properties"
        self.logback_file = workdir / "s3proxy-logback.xml"
        self._write_config()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        self.config_file.write_text(
            f"s3proxy.endpoint={self.endpoint}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={self.access_key}\n"
            f"s3proxy.credential={self.secret_key}\n"
            # boto3 >= 1.36 sends x-amz-checksum-* headers S3Proxy 3.0 doesn't know; ignore, not 501.
            "s3proxy.ignore-unknown-headers=true\n"
            # The demo page may fetch audio straight from the bucket.
            "s3proxy.cors-allow-all=true\n"
            "jclouds.provider=filesystem-nio2\n"
            f"jclouds.filesystem.basedir={self.data_dir}\n"
        )
        self.logback_file.write_text(
            "<configuration>\n"
            '  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">\n'
            "    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{36} - %msg%n</pattern></encoder>\n"
            "  </appender>\n"
            '  <logger name="org.gaul.shaded" level="WARN"/>\n'
            '  <root level="INFO"><appender-ref ref="OUT"/></root>\n'
            "</configuration>\n"
        )

    def command(self) -> list[str]:
        return [
            java_bin(), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.net.preferIPv4Stack=true", f"-Dlogback.configurationFile={self.logback_file}",
            "-cp", str(jars_dir("s3proxy") / "*"), "org.gaul.s3proxy.Main",
            "--properties", str(self.config_file),
        ]

    def probe(self) -> bool:
        return port_open("127.0.0.1", self.port) and s3_answers(self.endpoint)


# -------------------------------------------------------------------------- probes (all modes)


def kafka_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True if a broker returns cluster metadata."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 2000,
                         "log_level": 2})
    try:
        return len(admin.list_topics(timeout=timeout).brokers) > 0
    except Exception:  # noqa: BLE001 (a probe: any failure means 'not up yet')
        return False


def s3_answers(endpoint: str) -> bool:
    """True if anything speaking S3 answers with HTTP (even 403 without credentials)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(endpoint, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- other service kinds


class ExternalService:
    """A server somebody else runs: address only, no lifecycle control."""

    managed = False
    kind: ServiceKind = "external"

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address

    @property
    def running(self) -> bool:
        return True

    def _refuse(self, *_: Any, **__: Any) -> None:
        raise StackError(f"{self.name} at {self.address} is external: it cannot be started or stopped here")

    start = stop = kill = restart = _refuse


class DockerService:
    """A testcontainers container bound to a fixed host port, so stop/start keeps the address."""

    managed = True
    kind: ServiceKind = "docker"

    def __init__(self, name: str, container: Any, probe: Callable[[], bool]) -> None:
        self.name = name
        self.container = container
        self.probe = probe

    @property
    def running(self) -> bool:
        try:
            c = self.container.get_wrapped_container()
            c.reload()
            return bool(c.status == "running")
        except Exception:  # noqa: BLE001 (a probe: any failure means 'not up yet')
            return False

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.probe():
                return
            time.sleep(0.3)
        logs = self.container.get_logs()
        raise StackError(f"{self.name} container not ready after {timeout:.0f}s\n"
                         f"{logs[0].decode(errors='replace')[-4000:]}{logs[1].decode(errors='replace')[-4000:]}")

    def first_start(self, timeout: float = 120) -> None:
        self.container.start()
        self._wait(timeout)

    def start(self, timeout: float = 120) -> None:
        if not self.running:
            self.container.get_wrapped_container().start()
        self._wait(timeout)

    def stop(self, *, hard: bool = False, timeout: float = 30) -> None:
        c = self.container.get_wrapped_container()
        if hard:
            with contextlib.suppress(Exception):
                c.kill()
        else:
            c.stop(timeout=int(timeout))

    def kill(self) -> None:
        self.stop(hard=True)

    def restart(self, *, hard: bool = False, down_for: float = 0.0, timeout: float = 120) -> None:
        self.stop(hard=hard)
        if down_for > 0:
            time.sleep(down_for)
        self.start(timeout=timeout)

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.container.stop()


def _docker_host() -> str:
    from testcontainers.core.docker_client import DockerClient

    host = DockerClient().host()
    # "localhost" can resolve to ::1 first while Docker publishes on IPv4; and boto3 would try
    # virtual-host addressing (bucket.localhost) against a name but not against an IP.
    return "127.0.0.1" if host in ("localhost", "") else host


def _kafka_container(port: int, host: str) -> Any:
    from testcontainers.core.container import DockerContainer

    props = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": "1@localhost:9093",
        "listeners": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:9093",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": "/tmp/kraft-combined-logs",  # noqa: S108 (a path inside the throwaway Kafka container)
        **KAFKA_SINGLE_NODE,
    }
    c = DockerContainer(KAFKA_IMAGE)
    for k, v in props.items():
        # apache/kafka image: property a.b_c -> env KAFKA_A_B__C
        c.with_env("KAFKA_" + k.replace("_", "__").replace(".", "_").upper(), v)
    c.with_env("CLUSTER_ID", urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    c.with_env("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m")
    # Same number inside and out: the advertised address is right before and after a restart.
    c.with_bind_ports(port, port)
    return c


def _minio_container(port: int) -> Any:
    # Plain DockerContainer: testcontainers' MinioContainer needs the `minio` client package.
    from testcontainers.core.container import DockerContainer

    c = DockerContainer(MINIO_IMAGE)
    c.with_env("MINIO_ROOT_USER", S3_ACCESS_KEY)
    c.with_env("MINIO_ROOT_PASSWORD", S3_SECRET_KEY)
    c.with_command("server /data --address :9000")
    c.with_bind_ports(9000, port)
    return c


# -------------------------------------------------------------------------------------- the stack


def _new_run_dir() -> Path:
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    _prune_runs(keep=10)
    run = STACK_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    run.mkdir()
    (run / "owner.pid").write_text(f"{os.getpid()}\n")
    return run


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune_runs(keep: int) -> None:
    """Drop the oldest run dirs beyond ``keep``, never one whose owner is still alive."""
    runs = sorted((p for p in STACK_DIR.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in runs[:-keep] if keep else runs:
        try:
            owner = int((old / "owner.pid").read_text().strip())
        except (OSError, ValueError):
            owner = -1
        if owner > 0 and _pid_alive(owner):
            continue
        shutil.rmtree(old, ignore_errors=True)


def _resolve_kind(env_var: str) -> ServiceKind:
    forced = os.environ.get("DEVSTACK_MODE", "").strip().lower()
    if forced and forced not in ("external", "docker", "local"):
        raise StackError(f"DEVSTACK_MODE={forced!r}: expected external, docker or local")
    if forced == "external" or (not forced and os.environ.get(env_var)):
        if not os.environ.get(env_var):
            raise StackError(f"DEVSTACK_MODE=external but {env_var} is not set")
        return "external"
    if forced:
        return forced  # type: ignore[return-value]
    return "docker" if docker_available() else "local"


class LocalStack:
    """Kafka + S3 for the demo, tests, chaos test and benchmarks. A context manager.

    ``kafka`` / ``s3`` are the service handles: ``start()``, ``stop(hard=False)``, ``kill()``,
    ``restart(hard=False, down_for=0)``, ``running``, ``kind`` ("external"/"docker"/"local") and
    ``managed`` (False for external servers, whose lifecycle calls raise ``StackError``).
    """

    kafka: KafkaServer | DockerService | ExternalService
    s3: S3ProxyServer | DockerService | ExternalService
    registry: RegistryServer | ExternalService | None

    def __init__(self, *, keep_data: bool = False, kafka_heap_mb: int = 512,
                 kafka_config: Mapping[str, str] | None = None) -> None:
        self.keep_data = keep_data
        self.kafka_heap_mb = kafka_heap_mb
        self.kafka_config = dict(kafka_config or {})
        self.run_dir: Path | None = None
        self.kafka_bootstrap = ""
        self.s3_endpoint = ""
        self.s3_access_key = S3_ACCESS_KEY
        self.s3_secret_key = S3_SECRET_KEY
        self.s3_region = S3_REGION
        self.startup_seconds: dict[str, float] = {}
        self.registry = None
        self.registry_url = ""
        self._started = False

    # -- lifecycle

    def start(self) -> LocalStack:
        if self._started:
            return self
        t0 = time.monotonic()
        kafka_kind = _resolve_kind("KAFKA_BOOTSTRAP_SERVERS")
        s3_kind = _resolve_kind("S3_ENDPOINT_URL")
        if "local" in (kafka_kind, s3_kind):
            fetch_jars()
        if not kafka_kind == s3_kind == "external":
            self.run_dir = _new_run_dir()
        try:
            self._start_services(kafka_kind, s3_kind)
        except BaseException as e:
            self.close()
            if isinstance(e, StackError) and self.run_dir:
                e.add_note(f"logs: {self.run_dir / 'logs'}")
            raise
        self._started = True
        self.startup_seconds["total"] = time.monotonic() - t0
        log.info("stack up in %.1fs: kafka=%s (%s) s3=%s (%s)", self.startup_seconds["total"],
                 self.kafka_bootstrap, kafka_kind, self.s3_endpoint, s3_kind)
        return self

    def _start_services(self, kafka_kind: ServiceKind, s3_kind: ServiceKind) -> None:
        t0 = time.monotonic()
        # S3 is spawned first and not waited on, so its JVM boots while Kafka formats and starts.
        if s3_kind == "external":
            self.s3_endpoint = os.environ["S3_ENDPOINT_URL"]
            self.s3_access_key = os.environ.get("AWS_ACCESS_KEY_ID", "")
            self.s3_secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
            self.s3_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or S3_REGION
            self.s3 = ExternalService("s3", self.s3_endpoint)
        elif s3_kind == "local":
            assert self.run_dir is not None
            self.s3 = S3ProxyServer(self.run_dir)
            self.s3_endpoint = self.s3.endpoint
            self.s3.spawn()
        else:
            port = free_port()
            self.s3_endpoint = f"http://{_docker_host()}:{port}"
            endpoint = self.s3_endpoint
            self.s3 = DockerService("minio", _minio_container(port), lambda: s3_answers(endpoint))

        if kafka_kind == "external":
            self.kafka_bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
            self.kafka = ExternalService("kafka", self.kafka_bootstrap)
            if not kafka_answers(self.kafka_bootstrap, timeout=15):
                raise StackError(f"external Kafka at {self.kafka_bootstrap} does not answer")
        elif kafka_kind == "local":
            assert self.run_dir is not None
            self.kafka = KafkaServer(self.run_dir, heap_mb=self.kafka_heap_mb, extra_config=self.kafka_config)
            self.kafka_bootstrap = self.kafka.bootstrap
            self.kafka.start()
        else:
            host, port = _docker_host(), free_port()
            self.kafka_bootstrap = f"{host}:{port}"
            bootstrap = self.kafka_bootstrap
            self.kafka = DockerService("kafka", _kafka_container(port, host),
                                       lambda: port_open(host, port) and kafka_answers(bootstrap))
            self.kafka.first_start()
        self.startup_seconds["kafka"] = time.monotonic() - t0

        if isinstance(self.s3, S3ProxyServer):
            self.s3.wait_ready(90)
        elif isinstance(self.s3, DockerService):
            self.s3.first_start()
        elif not s3_answers(self.s3_endpoint):
            raise StackError(f"external S3 at {self.s3_endpoint} does not answer")
        self.startup_seconds["s3"] = time.monotonic() - t0

    def start_registry(self, timeout: float = 120) -> str:
        """Start the schema registry (once; later calls return at once) and return its URL.

        External when ``SCHEMA_REGISTRY_URL`` is set, else a local Apicurio Registry process.
        """
        from devstack.registry import RegistryServer, build_registry, registry_answers

        if self.registry is not None:
            return self.registry_url
        t0 = time.monotonic()
        url = os.environ.get("SCHEMA_REGISTRY_URL", "").strip()
        if url:
            if not registry_answers(url, timeout=10):
                raise StackError(f"external schema registry at {url} does not answer")
            self.registry, self.registry_url = ExternalService("registry", url), url
        elif os.environ.get("DEVSTACK_MODE", "").strip().lower() == "external":
            raise StackError("DEVSTACK_MODE=external but SCHEMA_REGISTRY_URL is not set")
        else:
            build_registry()
            if self.run_dir is None:  # Kafka and S3 external: the registry still needs a place for logs
                self.run_dir = _new_run_dir()
            server = RegistryServer(self.run_dir)
            try:
                server.start(timeout=timeout)
            except StackError as e:
                e.add_note(f"logs: {self.run_dir / 'logs'}")
                raise
            self.registry, self.registry_url = server, server.url
        self.startup_seconds["registry"] = time.monotonic() - t0
        log.info("schema registry at %s (%s) in %.1fs", self.registry_url, self.registry.kind,
                 self.startup_seconds["registry"])
        return self.registry_url

    def close(self) -> None:
        """Stop whatever this stack started; keep the logs, drop the data unless ``keep_data``."""
        for svc in (getattr(self, "registry", None), getattr(self, "s3", None), getattr(self, "kafka", None)):
            if isinstance(svc, JavaServer):
                svc.stop(timeout=20)
            elif isinstance(svc, DockerService):
                svc.remove()
        if self.run_dir and not self.keep_data:
            for d in ("kafka-data", "s3-data"):
                shutil.rmtree(self.run_dir / d, ignore_errors=True)
        self.registry = None
        self.registry_url = ""
        self._started = False

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clients

    def env(self, bucket: str | None = None, *, registry: bool = False) -> dict[str, str]:
        """Environment a worker process needs to reach this stack (merge into ``os.environ``).

        ``registry=True`` adds ``SCHEMA_REGISTRY_URL`` (starting the registry if needed), which
        switches the worker to Confluent framing; without it the worker uses single-object encoding.
        """
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_REGION": self.s3_region,
            "AWS_DEFAULT_REGION": self.s3_region,
        }
        if self.s3_access_key:
            env["AWS_ACCESS_KEY_ID"] = self.s3_access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.s3_secret_key
        if bucket:
            env["S3_BUCKET"] = bucket
        if registry:
            env["SCHEMA_REGISTRY_URL"] = self.start_registry()
        return env

    def kafka_client_config(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """librdkafka config reaching this broker, merged with ``extra``."""
        return {"bootstrap.servers": self.kafka_bootstrap, **(extra or {})}

    def admin(self) -> AdminClient:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.kafka_bootstrap})

    def s3_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.s3_endpoint, region_name=self.s3_region,
            aws_access_key_id=self.s3_access_key or None, aws_secret_access_key=self.s3_secret_key or None,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
        )

    # -- fixtures

    def create_topics(self, topics: Mapping[str, int], *, config: Mapping[str, str] | None = None,
                      timeout: float = 30) -> None:
        """Create ``{name: partitions}`` (existing ones are left alone) and wait for their leaders."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported from cimpl

        if not topics:
            return
        admin = self.admin()
        # replication_factor=-1: the broker's default (1 here, the cluster's choice when external).
        new = [NewTopic(name, num_partitions=n, replication_factor=-1, config=dict(config or {}))
               for name, n in topics.items()]
        for name, fut in admin.create_topics(new, request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise StackError(f"create topic {name}: {e}") from e
        deadline = time.monotonic() + timeout
        while True:
            md = admin.list_topics(timeout=timeout)
            ready = all(
                name in md.topics and md.topics[name].error is None
                and len(md.topics[name].partitions) >= n
                and all(p.leader >= 0 for p in md.topics[name].partitions.values())
                for name, n in topics.items()
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise StackError(f"topics {sorted(topics)} have no leaders after {timeout:.0f}s")
            time.sleep(0.1)

    def delete_topics(self, names: list[str], timeout: float = 30) -> None:
        from confluent_kafka import KafkaError, KafkaException

        admin = self.admin()  # held until the futures resolve: a collected client never resolves them
        for name, fut in admin.delete_topics(names, request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise StackError(f"delete topic {name}: {e}") from e

    def create_bucket(self, name: str) -> None:
        """Create the bucket if it does not exist yet."""
        s3 = self.s3_client()
        try:
            s3.create_bucket(Bucket=name)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        except s3.exceptions.BucketAlreadyExists:
            pass

    def describe(self) -> str:
        registry = f"registry {self.registry_url}  ({self.registry.kind})\n" if self.registry else ""
        return (f"kafka  {self.kafka_bootstrap}  ({self.kafka.kind})\n"
                f"s3     {self.s3_endpoint}  ({self.s3.kind})\n{registry}"
                f"logs   {self.run_dir / 'logs' if self.run_dir else '-'}")


# ------------------------------------------------------------------------------------------- CLI


def _parse_topic(spec: str) -> tuple[str, int]:
    name, _, parts = spec.partition(":")
    return name, int(parts or "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the Kafka and S3Proxy jars and build the schema registry "
                                     "into .cache/jars")
    f.add_argument("--force", action="store_true", help="fetch and build again even if present")
    f.add_argument("--no-registry", action="store_true", help="skip the schema registry build")
    up = sub.add_parser("up", help="start the stack, create topics + bucket, print exports, wait")
    up.add_argument("--topic", action="append", default=[], metavar="NAME[:PARTITIONS]",
                    help=f"topic to create (repeatable; default: {', '.join(DEFAULT_TOPICS)})")
    up.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create (default: %(default)s)")
    up.add_argument("--keep-data", action="store_true", help="keep the data dirs after shutdown")
    up.add_argument("--env-file", type=Path, help="also write the exports to this file")
    up.add_argument("--registry", action="store_true",
                    help="also start a schema registry and export SCHEMA_REGISTRY_URL")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    if args.cmd == "fetch":
        t0 = time.monotonic()
        for name, path in fetch_jars(force=args.force).items():
            print(f"{name}: {path} ({len(list(path.glob('*.jar')))} jars)")
        if not args.no_registry:
            from devstack.registry import build_registry

            t1 = time.monotonic()
            path = build_registry(force=args.force)
            print(f"registry: {path} ({len(list((path / 'lib').rglob('*.jar')))} jars, "
                  f"{time.monotonic() - t1:.1f}s)")
        print(f"done in {time.monotonic() - t0:.1f}s")
        return 0

    # SIGTERM -> SystemExit, so the `with` below stops the servers like Ctrl-C does; SIGINT is
    # re-armed because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    topics = dict(_parse_topic(t) for t in args.topic) if args.topic else DEFAULT_TOPICS
    try:
        with LocalStack(keep_data=args.keep_data) as stack:
            stack.create_topics(topics)
            stack.create_bucket(args.bucket)
            env = stack.env(bucket=args.bucket, registry=args.registry)
            exports = "".join(f"export {k}={v}\n" for k, v in env.items())
            if args.env_file:
                args.env_file.write_text(exports)
            print(f"{stack.describe()}\ntopics {', '.join(f'{t}:{n}' for t, n in topics.items())}\n"
                  f"bucket {args.bucket}\nstartup {stack.startup_seconds['total']:.1f}s\n\n"
                  f"{exports}\n# Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except StackError as e:
        print(f"stack failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
