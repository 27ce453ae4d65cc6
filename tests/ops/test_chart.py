"""Render the Helm chart with `helm template` and assert the wiring the processor depends on.

Needs a helm binary (scripts/install_ops_tools.sh puts one in .cache/bin); skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tts-processor"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
SECRET_ENV = {
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "HF_TOKEN",
}


def _helm() -> str | None:
    local = ROOT / ".cache" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


HELM = _helm()
pytestmark = pytest.mark.skipif(
    HELM is None, reason="helm binary not found (run scripts/install_ops_tools.sh to build .cache/bin/helm)"
)

Doc = dict[str, Any]


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run(
        [HELM, "template", "tts", str(CHART), "--namespace", "tts", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def render(*args: str) -> list[Doc]:
    proc = helm_template(*args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def render_full(*args: str) -> list[Doc]:
    return render("-f", str(FULL_VALUES), *args)


def one(docs: list[Doc], kind: str, name_suffix: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name_suffix is None or d["metadata"]["name"].endswith(name_suffix))
    ]
    assert len(found) == 1, f"expected one {kind} ({name_suffix}), got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[Doc]) -> list[str]:
    return [d["kind"] for d in docs]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def container(doc: Doc, name: str) -> Doc:
    spec = pod_spec(doc)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        if c["name"] == name:
            return c  # type: ignore[no-any-return]
    raise AssertionError(f"no container {name}")


def all_containers(doc: Doc) -> Iterator[Doc]:
    spec = pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("StatefulSet", "Job", "Deployment", "DaemonSet")]


@pytest.fixture(scope="module")
def default_docs() -> list[Doc]:
    return render()


@pytest.fixture(scope="module")
def full_docs() -> list[Doc]:
    return render_full()


@pytest.fixture(scope="module", params=["default", "full"])
def docs(request: pytest.FixtureRequest, default_docs: list[Doc], full_docs: list[Doc]) -> list[Doc]:
    return default_docs if request.param == "default" else full_docs


# --------------------------------------------------------------------------- workload shape


def test_worker_is_a_statefulset_with_headless_service(docs: list[Doc]) -> None:
    assert "Deployment" not in kinds(docs)
    sts = one(docs, "StatefulSet")
    headless = one(docs, "Service", "-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    dashboards = {d["metadata"]["name"] for d in docs if d["metadata"]["name"].endswith("-dashboards")}
    assert all(d["metadata"].get("namespace") == "tts" for d in docs if d["metadata"]["name"] not in dashboards)


def test_worker_id_comes_from_pod_name(docs: list[Doc]) -> None:
    for wl in workloads(docs):
        for c in wl["spec"]["template"]["spec"]["containers"]:
            env = env_of(c)
            assert env["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", wl["kind"]
            assert "value" not in env["WORKER_ID"]


def test_static_membership_and_kafka_settings(full_docs: list[Doc]) -> None:
    env = env_of(container(one(full_docs, "StatefulSet"), "processor"))
    assert env["KAFKA_STATIC_MEMBERSHIP"]["value"] == "true"
    assert env["KAFKA_GROUP_PROTOCOL"]["value"] == "consumer"
    assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["KAFKA_REQUEST_TOPIC"]["value"] == "tts.requests"
    assert env["S3_ALLOWED_BUCKETS"]["value"] == "tts-audio-prod,tts-audio-archive"
    assert json.loads(env["KAFKA_EXTRA"]["value"])["socket.keepalive.enable"] is True
    for name in ("KAFKA_RESULT_TOPIC", "KAFKA_PROGRESS_TOPIC", "KAFKA_HEALTH_TOPIC", "KAFKA_DLQ_TOPIC"):
        assert env[name]["value"]


def test_probes_hit_livez_and_readyz_on_http_port(docs: list[Doc]) -> None:
    c = container(one(docs, "StatefulSet"), "processor")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert str(ports["http"]) == env_of(c)["HTTP_PORT"]["value"]
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = c["startupProbe"]
    # Model load + warm-up: the startup probe must allow minutes, not seconds.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert c["args"] == ["run"]


def test_one_gpu_per_pod(docs: list[Doc]) -> None:
    res = container(one(docs, "StatefulSet"), "processor")["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1
    assert res["requests"]["nvidia.com/gpu"] == 1
    for key in ("cpu", "memory"):
        assert key in res["limits"] and key in res["requests"]


def test_gpu_count_is_fixed_to_one_by_schema() -> None:
    proc = helm_template("--set", "gpu.count=2")
    assert proc.returncode != 0
    assert "gpu" in proc.stderr and "count" in proc.stderr


@pytest.mark.parametrize("grace", [30, 60, 300])
def test_termination_grace_exceeds_worker_shutdown_grace(grace: int) -> None:
    sts = one(render("--set", f"worker.shutdownGraceSeconds={grace}"), "StatefulSet")
    env = env_of(container(sts, "processor"))
    assert float(env["WORKER_SHUTDOWN_GRACE_SECONDS"]["value"]) == grace
    assert pod_spec(sts)["terminationGracePeriodSeconds"] > grace


def test_termination_grace_in_full_values(full_docs: list[Doc]) -> None:
    sts = one(full_docs, "StatefulSet")
    env = env_of(container(sts, "processor"))
    shutdown = float(env["WORKER_SHUTDOWN_GRACE_SECONDS"]["value"])
    assert pod_spec(sts)["terminationGracePeriodSeconds"] >= shutdown + 5


# --------------------------------------------------------------------------- secrets


def test_secrets_only_via_secret_key_ref(docs: list[Doc]) -> None:
    assert "Secret" not in kinds(docs), "the chart must not create Secrets (existingSecret refs only)"
    for wl in workloads(docs):
        for c in all_containers(wl):
            for name, e in env_of(c).items():
                if name in SECRET_ENV or any(w in name for w in ("PASSWORD", "SECRET", "TOKEN")):
                    assert "value" not in e, f"{wl['kind']}/{c['name']}: {name} has a literal value"
                    assert set(e["valueFrom"]) == {"secretKeyRef"}, f"{name} not from a Secret"


def test_full_values_wire_all_credentials_from_existing_secrets(full_docs: list[Doc]) -> None:
    sts = one(full_docs, "StatefulSet")
    env = env_of(container(sts, "processor"))
    expected = {
        "KAFKA_SASL_USERNAME": ("tts-kafka-credentials", "username"),
        "KAFKA_SASL_PASSWORD": ("tts-kafka-credentials", "password"),
        "AWS_ACCESS_KEY_ID": ("tts-s3-credentials", "AWS_ACCESS_KEY_ID"),
        "AWS_SECRET_ACCESS_KEY": ("tts-s3-credentials", "AWS_SECRET_ACCESS_KEY"),
    }
    for name, (secret, key) in expected.items():
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (secret, key)
    hf = env_of(container(sts, "fetch-model"))["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert hf == {"name": "hf-token", "key": "HF_TOKEN"}
    job_env = env_of(container(one(full_docs, "Job"), "setup"))
    assert job_env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "tts-kafka-credentials"


def test_no_secret_material_in_configmaps(docs: list[Doc]) -> None:
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        blob = json.dumps(cm.get("data", {})).upper()
        for name in SECRET_ENV:
            assert name not in blob


def test_ca_bundles_are_mounted_from_secrets(full_docs: list[Doc]) -> None:
    for wl in (one(full_docs, "StatefulSet"), one(full_docs, "Job")):
        spec = pod_spec(wl)
        vols = {v["name"]: v for v in spec["volumes"]}
        main = spec["containers"][0]
        mounts = {m["name"]: m for m in main["volumeMounts"]}
        env = env_of(main)
        for vol, secret, var in (
            ("kafka-ca", "kafka-ca", "KAFKA_SSL_CA_LOCATION"),
            ("s3-ca", "minio-ca", "S3_CA_BUNDLE"),
        ):
            assert vols[vol]["secret"]["secretName"] == secret
            assert mounts[vol]["readOnly"] is True
            assert env[var]["value"].startswith(mounts[vol]["mountPath"] + "/")


# --------------------------------------------------------------------------- hardening


def test_security_context_hardening(docs: list[Doc]) -> None:
    for wl in workloads(docs):
        spec = pod_spec(wl)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for c in all_containers(wl):
            sc = c["securityContext"]
            where = f"{wl['kind']}/{c['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            for key in ("cpu", "memory"):
                assert key in c["resources"]["requests"], where
                assert key in c["resources"]["limits"], where
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: read-only rootfs needs a writable /tmp"


def test_writable_paths_are_emptydirs(docs: list[Doc]) -> None:
    sts = one(docs, "StatefulSet")
    vols = {v["name"]: v for v in pod_spec(sts)["volumes"]}
    assert "emptyDir" in vols["tmp"] and "emptyDir" in vols["cache"]
    env = env_of(container(sts, "processor"))
    cache_mount = next(m for m in container(sts, "processor")["volumeMounts"] if m["name"] == "cache")
    for var in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "TTS_CACHE_DIR"):
        assert env[var]["value"].startswith(cache_mount["mountPath"]), var


def test_service_accounts_do_not_automount_tokens(docs: list[Doc]) -> None:
    sas = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sas
    assert all(sa["automountServiceAccountToken"] is False for sa in sas)
    names = {sa["metadata"]["name"] for sa in sas}
    for wl in workloads(docs):
        assert pod_spec(wl)["serviceAccountName"] in names


def test_image_digest_pinning(full_docs: list[Doc], default_docs: list[Doc]) -> None:
    for wl in workloads(full_docs):
        for c in all_containers(wl):
            assert "@sha256:" in c["image"], c["image"]
    for wl in workloads(default_docs):
        for c in all_containers(wl):
            assert not c["image"].endswith(":latest")


# --------------------------------------------------------------------------- model volume


def test_model_volume_claim_template_by_default(default_docs: list[Doc]) -> None:
    sts = one(default_docs, "StatefulSet")
    templates = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    assert "model" in templates
    main = container(sts, "processor")
    mount = next(m for m in main["volumeMounts"] if m["name"] == "model")
    assert mount["readOnly"] is True
    env = env_of(main)
    assert env["INDEX_TTS_MODEL_DIR"]["value"].startswith(mount["mountPath"] + "/")
    assert env["HF_HOME"]["value"].startswith(mount["mountPath"] + "/")
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert "fetch-model" not in {c["name"] for c in pod_spec(sts).get("initContainers", [])}


def test_existing_model_claim() -> None:
    sts = one(render("--set", "model.persistence.existingClaim=shared-models"), "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    vols = {v["name"]: v for v in pod_spec(sts)["volumes"]}
    assert vols["model"]["persistentVolumeClaim"]["claimName"] == "shared-models"


def test_model_download_init_container(full_docs: list[Doc]) -> None:
    sts = one(full_docs, "StatefulSet")
    init_names = [c["name"] for c in pod_spec(sts)["initContainers"]]
    assert init_names == ["seed-cache", "fetch-model"]
    fetch = container(sts, "fetch-model")
    script = "\n".join(fetch["args"])
    assert "hf download" in script
    env = env_of(fetch)
    assert env["MODEL_REPO"]["value"] == "IndexTeam/IndexTTS-2"
    main_env = env_of(container(sts, "processor"))
    assert env["INDEX_TTS_MODEL_DIR"]["value"] == main_env["INDEX_TTS_MODEL_DIR"]["value"]
    assert env["HF_HOME"]["value"] == main_env["HF_HOME"]["value"]
    mount = next(m for m in fetch["volumeMounts"] if m["name"] == "model")
    assert not mount.get("readOnly", False)


# --------------------------------------------------------------------------- topics / scaling


@pytest.mark.parametrize("partitions", [1, 8, 24])
def test_setup_job_creates_topics_with_partitions(partitions: int) -> None:
    docs = render("--set", f"kafka.topics.partitions={partitions}")
    job = one(docs, "Job")
    ann = job["metadata"]["annotations"]
    assert "pre-install" in ann["helm.sh/hook"] and "pre-upgrade" in ann["helm.sh/hook"]
    c = container(job, "setup")
    args = c["args"]
    assert args[0] == "setup"
    assert args[args.index("--partitions") + 1] == str(partitions)
    assert args[args.index("--replication") + 1] == "3"
    assert "--no-bucket" not in args
    # The hook runs before release resources exist: its ServiceAccount must be a hook too.
    sa = next(
        d
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == pod_spec(job)["serviceAccountName"]
    )
    assert "pre-install" in sa["metadata"]["annotations"]["helm.sh/hook"]
    assert int(sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])


def test_setup_job_options() -> None:
    args = container(
        one(render("--set", "kafka.topics.replicationFactor=1", "--set", "s3.createBucket=false"), "Job"), "setup"
    )["args"]
    assert args[args.index("--replication") + 1] == "1"
    assert "--no-bucket" in args


def test_keda_scaled_object(full_docs: list[Doc]) -> None:
    so = one(full_docs, "ScaledObject")
    sts = one(full_docs, "StatefulSet")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": sts["metadata"]["name"],
    }
    assert "replicas" not in sts["spec"], "KEDA owns the replica count"
    env = env_of(container(sts, "processor"))
    job_args = container(one(full_docs, "Job"), "setup")["args"]
    partitions = int(job_args[job_args.index("--partitions") + 1])
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    assert meta["topic"] == env["KAFKA_REQUEST_TOPIC"]["value"]
    assert meta["consumerGroup"] == env["KAFKA_GROUP_ID"]["value"]
    assert meta["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]["value"]
    assert meta["allowIdleConsumers"] == "false"
    assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
    ta = one(full_docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == ta["metadata"]["name"]
    params = {r["parameter"]: (r["name"], r["key"]) for r in ta["spec"]["secretTargetRef"]}
    assert params == {
        "username": ("tts-kafka-credentials", "username"),
        "password": ("tts-kafka-credentials", "password"),
        "ca": ("kafka-ca", "ca.crt"),
    }


@pytest.mark.parametrize(("max_replicas", "partitions"), [(9, 8), (17, 16), (2, 1)])
def test_keda_max_replicas_above_partitions_fails(max_replicas: int, partitions: int) -> None:
    proc = helm_template(
        "--set",
        "autoscaling.enabled=true",
        "--set",
        f"autoscaling.maxReplicaCount={max_replicas}",
        "--set",
        "autoscaling.minReplicaCount=1",
        "--set",
        f"kafka.topics.partitions={partitions}",
    )
    assert proc.returncode != 0
    assert "must not exceed kafka.topics.partitions" in proc.stderr


def test_keda_max_replicas_equal_to_partitions_renders() -> None:
    docs = render(
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "autoscaling.maxReplicaCount=8",
        "--set",
        "kafka.topics.partitions=8",
    )
    so = one(docs, "ScaledObject")
    assert so["spec"]["maxReplicaCount"] == 8
    assert "authenticationRef" not in so["spec"]["triggers"][0]
    assert "TriggerAuthentication" not in kinds(docs)


def test_replica_count_above_partitions_fails() -> None:
    proc = helm_template("--set", "replicaCount=5", "--set", "kafka.topics.partitions=4")
    assert proc.returncode != 0
    assert "replicaCount (5) must not exceed" in proc.stderr


def test_sasl_requires_existing_secret() -> None:
    proc = helm_template("--set", "kafka.security.protocol=SASL_SSL", "--set", "kafka.security.saslMechanism=PLAIN")
    assert proc.returncode != 0
    assert "existingSecret" in proc.stderr


def test_no_keda_objects_by_default(default_docs: list[Doc]) -> None:
    assert "ScaledObject" not in kinds(default_docs)
    assert one(default_docs, "StatefulSet")["spec"]["replicas"] == 1


# --------------------------------------------------------------------------- availability / observability


def test_pod_disruption_budget_selects_workers(docs: list[Doc]) -> None:
    pdb = one(docs, "PodDisruptionBudget")
    sts = one(docs, "StatefulSet")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_metrics_service_and_service_monitor(full_docs: list[Doc]) -> None:
    svc = one(full_docs, "Service", "-metrics")
    sm = one(full_docs, "ServiceMonitor")
    sts = one(full_docs, "StatefulSet")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["tts"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_configmap(docs: list[Doc]) -> None:
    cm = one(docs, "ConfigMap", "-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert files and set(cm["data"]) == {f.name for f in files}
    exprs = ""
    for name, text in cm["data"].items():
        dash = json.loads(text)
        assert dash["title"] and dash["panels"], name
        exprs += json.dumps(dash)
    for metric in ("tts_requests_total", "tts_synthesis_seconds", "tts_queue_lag_messages"):
        assert metric in exprs


def test_network_policy_allows_http_port_only(docs: list[Doc]) -> None:
    np = one(docs, "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def render_notes(tmp_path: Path, *args: str) -> str:
    """`helm template` skips NOTES.txt: render a copy of the chart that wraps it in a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes_preview.tpl").write_text(
        '{{- define "notes-preview" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes-preview.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-preview\n"
        'data:\n  notes: {{ include "notes-preview" . | toJson }}\n'
    )
    assert HELM is not None
    proc = subprocess.run(
        [HELM, "template", "tts", str(chart), "-n", "tts", "--show-only", "templates/notes-preview.yaml", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return str(yaml.safe_load(proc.stdout)["data"]["notes"])


def test_notes(tmp_path: Path) -> None:
    default = render_notes(tmp_path / "d")
    assert "tts-tts-processor-0" in default and "replicaCount=N" in default and "(N <= 8)" in default
    assert "NOT fetched" in default
    full = render_notes(tmp_path / "f", "-f", str(FULL_VALUES))
    assert "KEDA on consumer lag, 2..16 workers" in full
    assert "monitoring/tts-tts-processor-dashboards" in full


def test_values_schema_is_valid_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for values_file in (CHART / "values.yaml", FULL_VALUES):
        values = yaml.safe_load(values_file.read_text())
        if values_file == FULL_VALUES:
            continue  # a partial override; helm validates the merged values during render
        jsonschema.Draft7Validator(schema).validate(values)
