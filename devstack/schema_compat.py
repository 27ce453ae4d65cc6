"""Schema compatibility gate: every schema in ``schemas/`` against its released version, both ways.

"Released" means: the schema file as it is at the commit recorded in ``schemas/RELEASED`` (one line,
a full commit id; see docs/schema-evolution.md for when it moves). A schema that did not exist at
that commit is new and has nothing to be compatible with. Older versions kept in
``schemas/history/`` (which the wire codec still reads) are checked too, backward only.

Two directions, as the Confluent registry names them:

* BACKWARD: the new schema reads data written with the released one (consumers upgrade first).
* FORWARD: the released schema reads data written with the new one (producers upgrade first).

Two independent checks, so a bug in one is not the gate:

* ``check_locally``: Apache Avro's own compatibility checker (the Java reference algorithm's port),
  which names the offending field, plus an actual resolution with fastavro: records generated from
  the writer schema are written with it and read with the reader schema.
* ``check_with_registry``: a real Schema Registry's compatibility API (``POST
  /compatibility/subjects/<s>/versions/latest``) with the subject's level set to BACKWARD, then
  FORWARD.

CLI (exit 1 on any incompatibility, each problem on one line naming schema, direction and field)::

    python -m devstack.schema_compat                    # local checks
    python -m devstack.schema_compat --registry URL     # and the registry's verdict
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "schemas"
RELEASED_FILE = SCHEMA_DIR / "RELEASED"
DIRECTIONS = ("BACKWARD", "FORWARD")
SAMPLES = 40  # generated records per writer schema: enough to hit both branches of every nullable field


class CompatError(RuntimeError):
    """The baseline could not be read (bad RELEASED file, commit missing from a shallow clone)."""


@dataclass(frozen=True)
class Problem:
    schema: str      # e.g. "TtsRequest"
    direction: str   # BACKWARD | FORWARD
    baseline: str    # what it was checked against: "released <commit>" or "history/<file>"
    checker: str     # "avro" | "fastavro" | "registry"
    detail: str      # names the field

    def __str__(self) -> str:
        return f"{self.schema}: {self.direction} incompatible with {self.baseline} ({self.checker}): {self.detail}"


# ------------------------------------------------------------------------------------ baselines


def released_commit() -> str:
    try:
        commit = RELEASED_FILE.read_text().split("#", 1)[0].strip()
    except OSError as e:
        raise CompatError(f"{RELEASED_FILE} missing: it names the commit of the released schemas") from e
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise CompatError(f"{RELEASED_FILE}: expected a full 40-hex commit id, got {commit!r}")
    return commit


def released_schemas(commit: str | None = None, root: Path = REPO_ROOT) -> dict[str, dict[str, Any]]:
    """``{name: schema}`` of every ``schemas/*.avsc`` at the released commit."""
    commit = commit or released_commit()
    ls = subprocess.run(["git", "ls-tree", "--name-only", f"{commit}:schemas/"], cwd=root,
                        capture_output=True, text=True)
    if ls.returncode != 0:
        raise CompatError(f"released commit {commit} not readable from git ({ls.stderr.strip()}); "
                          "a shallow clone needs `git fetch --unshallow`")
    out: dict[str, dict[str, Any]] = {}
    for name in ls.stdout.split():
        if not name.endswith(".avsc"):
            continue
        text = subprocess.run(["git", "show", f"{commit}:schemas/{name}"], cwd=root, capture_output=True,
                              text=True, check=True).stdout
        out[name.removesuffix(".avsc")] = json.loads(text)
    return out


def current_schemas(schema_dir: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(schema_dir.glob("*.avsc"))}


def history_schemas(schema_dir: Path = SCHEMA_DIR) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """``{name: [(file name, schema), ...]}`` from ``schemas/history/<Name>.<fingerprint>.avsc``."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for p in sorted((schema_dir / "history").glob("*.avsc")):
        out.setdefault(p.name.split(".", 1)[0], []).append((p.name, json.loads(p.read_text())))
    return out


# ------------------------------------------------------------------------------ local (no registry)


def _field_path(schema: Any, pointer: str) -> str:
    """``/fields/2/type/fields/0/type`` in ``schema`` -> ``parameters.top_p`` (names, not indexes)."""
    node: Any = schema
    names: list[str] = []
    parts = [p for p in pointer.split("/") if p]
    i = 0
    while i < len(parts):
        part = parts[i]
        try:
            if isinstance(node, list):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node[part]
                if part == "fields" and i + 1 < len(parts):
                    node = node[int(parts[i + 1])]
                    names.append(node["name"])
                    i += 1
            else:
                break
        except (KeyError, IndexError, ValueError):
            break
        i += 1
    return ".".join(names) or "(the record itself)"


def avro_problems(reader: Mapping[str, Any], writer: Mapping[str, Any]) -> list[str]:
    """Apache Avro's verdict on ``reader`` reading ``writer`` data: one line per offending field."""
    from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
    from avro.schema import parse

    result = ReaderWriterCompatibilityChecker().get_compatibility(parse(json.dumps(reader)),
                                                                  parse(json.dumps(writer)))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted(i.value for i in result.incompatibilities))
    messages = "; ".join(sorted(result.messages))
    # The doctor's resolver says it in words ("priority: new field without a default"). Both stop at
    # the outermost union they cannot match: a change inside an optional record names that record.
    from processor.doctor import can_read

    leaves = can_read(writer, reader)
    why = f" [{'; '.join(leaves)}]" if leaves else ""
    # Pointers are into the reader schema (as in the Java implementation); "/" is the root record,
    # reported too whenever a field inside it is.
    locations = sorted(loc for loc in result.locations if loc.strip("/")) or sorted(result.locations)
    return [f"field {_field_path(reader, loc)!r} ({loc}): {kinds}: {messages}{why}" for loc in locations]


def fastavro_problems(reader: Mapping[str, Any], writer: Mapping[str, Any], samples: int = SAMPLES) -> list[str]:
    """Write generated records with ``writer``, read them with ``reader``: the errors fastavro raises."""
    import fastavro
    from fastavro.utils import generate_many

    w = fastavro.parse_schema(dict(writer))
    r = fastavro.parse_schema(dict(reader))
    problems: set[str] = set()
    for record in generate_many(w, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, w, r)
        except Exception as e:  # SchemaResolutionError names the field ("No default value for b")  # noqa: BLE001
            problems.add(f"{type(e).__name__}: {e}")
    return sorted(problems)


def check_pair(name: str, old: Mapping[str, Any], new: Mapping[str, Any], baseline: str,
               directions: tuple[str, ...] = DIRECTIONS) -> list[Problem]:
    out: list[Problem] = []
    for direction in directions:
        reader, writer = (new, old) if direction == "BACKWARD" else (old, new)
        out += [Problem(name, direction, baseline, "avro", d) for d in avro_problems(reader, writer)]
        out += [Problem(name, direction, baseline, "fastavro", d) for d in fastavro_problems(reader, writer)]
    return out


def check_locally(current: Mapping[str, Mapping[str, Any]] | None = None,
                  released: Mapping[str, Mapping[str, Any]] | None = None,
                  history: Mapping[str, list[tuple[str, dict[str, Any]]]] | None = None,
                  baseline: str | None = None) -> list[Problem]:
    """Every current schema against its released version (both ways) and its history (backward)."""
    current = current_schemas() if current is None else current
    if released is None:
        baseline = baseline or f"released {released_commit()[:12]}"
        released = released_schemas()
    history = history_schemas() if history is None else history
    label = baseline or "released"
    out: list[Problem] = []
    for name, new in current.items():
        if name in released:
            out += check_pair(name, released[name], new, label)
        for file, old in history.get(name, []):
            out += check_pair(name, old, new, f"history/{file}", ("BACKWARD",))
    return out


# ------------------------------------------------------------------------------ with the registry


def _call(url: str, method: str, body: Mapping[str, Any] | None = None) -> Any:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise CompatError(f"{method} {url}: HTTP {e.code} {e.read().decode(errors='replace')[:500]}") from e


def registry_verdict(registry_url: str, old: Mapping[str, Any], new: Mapping[str, Any], direction: str,
                     subject: str | None = None) -> tuple[bool, str]:
    """Register ``old`` under a fresh subject at level ``direction`` and ask whether ``new`` may follow."""
    base = registry_url.rstrip("/")
    subject = subject or f"compat-{uuid.uuid4().hex[:12]}"
    _call(f"{base}/config/{subject}", "PUT", {"compatibility": direction})
    _call(f"{base}/subjects/{subject}/versions", "POST", {"schema": json.dumps(old)})
    verdict = _call(f"{base}/compatibility/subjects/{subject}/versions/latest?verbose=true", "POST",
                    {"schema": json.dumps(new)})
    ok = bool(verdict.get("is_compatible"))
    # Apicurio puts its reason in "reason"; Confluent's server in "messages".
    reason = verdict.get("reason") or "; ".join(verdict.get("messages") or []) or ""
    return ok, reason


def check_with_registry(registry_url: str, current: Mapping[str, Mapping[str, Any]] | None = None,
                        released: Mapping[str, Mapping[str, Any]] | None = None,
                        baseline: str | None = None) -> list[Problem]:
    current = current_schemas() if current is None else current
    if released is None:
        baseline = baseline or f"released {released_commit()[:12]}"
        released = released_schemas()
    out: list[Problem] = []
    for name, new in current.items():
        if name not in released:
            continue
        for direction in DIRECTIONS:
            ok, reason = registry_verdict(registry_url, released[name], new, direction)
            if not ok:
                out.append(Problem(name, direction, baseline or "released", "registry", reason or "(no reason given)"))
    return out


# ------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack.schema_compat", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", metavar="URL", help="also ask this Confluent-API registry (e.g. SCHEMA_REGISTRY_URL)")
    args = p.parse_args(argv)
    try:
        commit = released_commit()
        problems = check_locally()
        if args.registry:
            problems += check_with_registry(args.registry)
    except CompatError as e:
        print(f"schema compatibility: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    checked = ", ".join(sorted(current_schemas()))
    print(f"{'FAIL' if problems else 'ok'}: {checked} against released {commit[:12]} "
          f"({'avro + fastavro' + (' + registry' if args.registry else '')}), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
