"""A real Confluent-API Schema Registry for the local stack: Apicurio Registry, built from Maven Central.

Apicurio Registry 2.4.2.Final with in-memory storage serves the Confluent-compatible API under
``/apis/ccompat/v7``, which is all our clients (confluent-kafka's ``SchemaRegistryClient``) speak.
Its published ``apicurio-registry-app`` jar is the input of a Quarkus build rather than a runnable
jar, so ``build_registry()`` runs that build once (``devstack/maven/registry``: 300 jars, 131 MB) and
caches the result in ``.cache/jars/registry``. Measured on the shared 2-core machine: 256 s from an
empty ``~/.m2`` (about 230 MB downloaded), 65 s with the artifacts already in ``~/.m2``, nothing
once built. Newer lines (2.6.x, 3.x) do not resolve from Central alone.

``RegistryServer`` runs it like Kafka and S3Proxy: one Java process on a free 127.0.0.1 port, its
output under ``.stack/<run>/logs/registry.out``, stopped with the stack (and by PDEATHSIG if the
Python process dies first). Storage is in memory: a restart forgets every schema, which is what a
test wants. Ready in 5-14 s on the shared, loaded 2-core machine (the issue's trial: ~2.5 s idle);
RSS ~170-180 MB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.stack import JARS_DIR, MAVEN_DIR, JavaServer, ServiceKind, StackError, free_port, java_bin

log = logging.getLogger("devstack.registry")

REGISTRY_VERSION = "2.4.2.Final"  # keep in step with devstack/maven/registry/pom.xml
REGISTRY_MAVEN = MAVEN_DIR / "registry"
REGISTRY_DIR = JARS_DIR / "registry"
CCOMPAT_PATH = "/apis/ccompat/v7"


def _build_digest() -> str:
    h = hashlib.sha256()
    for name in ("pom.xml", "settings.xml"):
        h.update((REGISTRY_MAVEN / name).read_bytes())
    return h.hexdigest()


def runner_jar(root: Path = REGISTRY_DIR) -> Path:
    return root / "registry-runner.jar"


def build_registry(force: bool = False) -> Path:
    """Build the runnable registry into ``.cache/jars/registry`` unless a build of the current pom is there.

    The Maven project is copied to a scratch directory first, so no ``target/`` lands in the source
    tree. The result moves into place in one rename: a half-built registry is never taken for one.
    """
    dest = REGISTRY_DIR
    marker = dest / ".complete"
    digest = _build_digest()
    if not force and marker.is_file() and marker.read_text().strip() == digest and runner_jar(dest).is_file():
        return dest
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven (mvn) is needed to build the schema registry: apt-get install maven")
    scratch = dest.with_name("registry.build")
    partial = dest.with_name("registry.partial")
    for d in (scratch, partial):
        shutil.rmtree(d, ignore_errors=True)
    scratch.mkdir(parents=True)
    for name in ("pom.xml", "settings.xml"):
        shutil.copy2(REGISTRY_MAVEN / name, scratch / name)
    t0 = time.monotonic()
    log.info("building Apicurio Registry %s into %s (Quarkus build, first time ~90 s)", REGISTRY_VERSION, dest)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-s", "settings.xml", "-DskipTests", "package"],
        cwd=scratch, capture_output=True, text=True,
    )
    target = scratch / "target"
    runners = sorted(target.glob("*-runner.jar"))
    if proc.returncode != 0 or not runners or not (target / "lib").is_dir():
        raise StackError(f"registry build failed (rc={proc.returncode}) in {scratch}:\n"
                         f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    partial.mkdir()
    # The runner's manifest names its classpath relative to itself (lib/...), so both move together.
    runners[0].rename(runner_jar(partial))
    (target / "lib").rename(partial / "lib")
    (partial / ".complete").write_text(digest + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    shutil.rmtree(scratch, ignore_errors=True)
    log.info("built the registry in %.1fs", time.monotonic() - t0)
    return dest


def registry_answers(url: str, timeout: float = 2.0) -> bool:
    """True if a Confluent-API registry at ``url`` lists its subjects."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/subjects", timeout=timeout) as r:
            return r.status == 200 and isinstance(json.loads(r.read()), list)
    except (OSError, ValueError, urllib.error.HTTPError):
        return False


class RegistryServer(JavaServer):
    """Apicurio Registry (in-memory storage) with its Confluent-compatible API on 127.0.0.1."""

    name = "registry"
    managed = True
    kind: ServiceKind = "local"

    def __init__(self, workdir: Path, *, port: int | None = None, heap_mb: int = 256) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.heap_mb = heap_mb

    @property
    def url(self) -> str:
        """What ``SCHEMA_REGISTRY_URL`` should hold: the Confluent-compatible API's base."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    def command(self) -> list[str]:
        jar = runner_jar()
        if not jar.is_file():
            raise StackError(f"{jar} missing: build it with `python -m devstack.stack fetch`")
        return [
            java_bin(), f"-Xmx{self.heap_mb}m", "-XX:+ExitOnOutOfMemoryError", "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dquarkus.http.port={self.port}", "-Dquarkus.http.host=127.0.0.1",
            # Not -Dregistry.ccompat.use-canonical-hash=true: in 2.4.2 it makes the server store and
            # return its *canonical* form, whose record fields are sorted by name, a different binary
            # layout from the one the producer wrote, so every reader decodes garbage
            # (test_registry.py::test_codec_registers_frames_and_reads_back fails with it). The cost
            # of leaving it off: a client that re-serializes the same schema with other whitespace
            # gets a new version of identical content; our Codec always sends the same text.
            # The production profile opens 20 database connections up front; a test needs few.
            "-Dquarkus.datasource.jdbc.initial-size=2", "-Dquarkus.datasource.jdbc.min-size=2",
            "-jar", str(jar),
        ]

    def probe(self) -> bool:
        return registry_answers(self.url)
