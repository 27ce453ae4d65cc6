"""The Grafana dashboard queries only series that processor/metrics.py exports, with labels they carry.

Metric names and label sets are read from the live prometheus_client objects (not copied here), so
renaming a metric or a label without updating the dashboard fails this test, and so does a metric
added to processor/metrics.py that no panel shows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from processor import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "tts-processor" / "dashboards" / "tts-processor.json"
# Labels Prometheus adds when it scrapes a target (ServiceMonitor / pod discovery), not the processor.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "container", "service", "endpoint"}
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "by",
                "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "label_values",
                "topk", "bottomk", "clamp_min", "clamp_max", "abs", "vector", "scalar", "time", "offset", "bool"}


def exported() -> dict[str, tuple[str, set[str]]]:
    """Every sample name the processor exposes -> (metric family, its label names)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = set(obj._labelnames)
        (family,) = obj.describe()
        for suffix in SUFFIXES[family.type]:
            out[family.name + suffix] = (family.name, labels | ({"le"} if suffix == "_bucket" else set()))
    return out


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def all_panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def variable_queries(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of every ``label_values(selector, label)`` variable."""
    out = []
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            assert m, f"${var['name']}: only label_values(selector, label) queries are supported: {q!r}"
            out.append((f"${var['name']}", m.group(1), m.group(2)))
    return out


def expressions(d: dict[str, Any]) -> list[tuple[str, str]]:
    exprs = [(p["title"], t["expr"]) for p in all_panels(d) for t in p.get("targets", [])]
    return exprs + [(name, selector) for name, selector, _ in variable_queries(d)]


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def test_every_series_in_the_dashboard_is_exported_by_processor_metrics() -> None:
    known = exported()
    for title, expr in expressions(dashboard()):
        names = set(re.findall(r"\b(tts_[a-z0-9_]+)\b", strip_strings(expr)))
        assert names, f"{title}: no tts_* series in {expr!r}"
        unknown = names - set(known)
        assert not unknown, f"{title}: {sorted(unknown)} not in processor/metrics.py (have {sorted(known)})"
        # Nothing else that looks like a series name: only tts_* metrics and PromQL words.
        bare = re.sub(r"\[[^\]]*\]", "", strip_strings(expr))
        bare = re.sub(r"\{[^}]*\}", "", bare)
        bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
        words = set(re.findall(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b", bare)) - names - PROMQL_WORDS
        words = {w for w in words if not w.startswith("__")}
        assert not words, f"{title}: unexpected identifiers {sorted(words)} in {expr!r}"


def test_labels_used_in_the_dashboard_exist_on_the_series() -> None:
    known = exported()
    for title, expr in expressions(dashboard()):
        clean = strip_strings(expr)
        names = set(re.findall(r"\b(tts_[a-z0-9_]+)\b", clean))
        available = set().union(*(known[n][1] for n in names)) | TARGET_LABELS
        for name, selector in re.findall(r"\b(tts_[a-z0-9_]+)\s*\{([^}]*)\}", clean):
            used = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
            assert used <= known[name][1] | TARGET_LABELS, f"{title}: {name} has no label(s) {used - known[name][1]}"
        for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", clean):
            used = {g.strip() for g in group.split(",") if g.strip()}
            assert used <= available, f"{title}: grouping by {sorted(used - available)}, not labels of {names}"
        for legend_label in re.findall(r"\{\{\s*(\w+)\s*\}\}", " ".join(
                t.get("legendFormat", "") for p in all_panels(dashboard()) if p["title"] == title
                for t in p.get("targets", []) if t["expr"] == expr)):
            assert legend_label in available, f"{title}: legend uses {{{{{legend_label}}}}}, not a label"


def test_template_variables_list_labels_of_the_series() -> None:
    known = exported()
    for name, selector, label in variable_queries(dashboard()):
        (series,) = re.findall(r"\b(tts_[a-z0-9_]+)\b", selector)
        assert label in known[series][1] | TARGET_LABELS, f"{name}: {series} has no label {label}"


def test_label_values_used_in_filters_are_the_ones_the_code_writes() -> None:
    """status and error codes, stage names: the values the processor really sets."""
    from processor.errors import ErrorCode

    src = (Path(metrics.__file__).parent / "pipeline.py").read_text()

    def written(metric: str) -> set[str]:
        return set(re.findall(rf'{metric}\.labels\("(\w+)"\)', src))

    values = {"status": {"success", "error"}, "stage": written("STAGE_SECONDS") | {"encode", "upload"},
              "error_code": {c.value for c in ErrorCode}, "result": {"hit", "miss"},
              "kind": written("REBALANCES") | {"allocated", "total"}, "outcome": written("TRANSACTIONS")}
    assert {"assign", "revoke", "lost"} <= values["kind"] and "committed" in values["outcome"]
    for title, expr in expressions(dashboard()):
        for label, value in re.findall(r'\b(status|stage|error_code|result|kind|outcome)\s*=\s*"([^"]*)"', expr):
            assert value in values[label], f"{title}: {label}={value!r} is never written"


def test_every_metric_has_a_panel() -> None:
    text = " ".join(e for _, e in expressions(dashboard()))
    families = {family for family, _ in exported().values()}
    missing = {f for f in families if not re.search(rf"\b{f}(_total|_bucket|_sum|_count)?\b", text)}
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_requested_views_are_present() -> None:
    text = json.dumps(dashboard())
    for needle in (
        "sum by (status) (rate(tts_requests_total",
        "sum by (error_code) (rate(tts_requests_total",
        "histogram_quantile(0.5, sum by (le) (rate(tts_synthesis_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(tts_synthesis_seconds_bucket",
        "tts_real_time_factor_bucket",
        "sum by (stage) (rate(tts_stage_seconds_sum",
        "max by (topic, partition) (tts_queue_lag_messages",
        "tts_inflight_job_age_seconds",
        "sum by (kind) (increase(tts_rebalances_total",
        "rate(tts_dead_letters_total",
        'tts_speaker_cache_total{namespace=~\\"$namespace\\", pod=~\\"$pod\\", result=\\"hit\\"}',
        "tts_gpu_memory_bytes",
        "sum(tts_worker_ready",
    ):
        assert needle in text, needle


def test_datasource_is_a_template_variable_used_by_every_query() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in all_panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
            assert "$__rate_interval" in t["expr"] or "rate(" not in t["expr"] or "[1h]" in t["expr"], p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("field", ["h", "w", "x", "y"])
def test_panels_fit_the_grid(field: str) -> None:
    for p in all_panels(dashboard()):
        assert isinstance(p["gridPos"][field], int), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]


def test_operations_doc_lists_every_metric_with_type_and_labels() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in doc.splitlines() if line.startswith("| `tts_")}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        (family,) = obj.describe()
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in rows, f"docs/operations.md has no row for {name}"
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        assert cells[1] == family.type, (name, cells[1])
        assert set(re.findall(r"`(\w+)`", cells[2])) == set(obj._labelnames), (name, cells[2])
    assert len(rows) == len([o for o in vars(metrics).values() if isinstance(o, MetricWrapperBase)])
