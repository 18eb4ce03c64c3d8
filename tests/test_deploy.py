"""Deployment as code: the Kubernetes manifests validate against the Kubernetes JSON schemas
(bundled by kubernetes-validate, so no network is needed), the compose file validates against the
Compose Specification's schema (a copy in tests/deploy_schemas) and describes the deployment the
README promises, and the Dockerfile installs from the lock.

`docker compose config` also checks the compose file wherever the Compose plugin is installed
(it is not on the machines these tests were written on: there it is the schema alone).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from service.webhooks.worker import DeliveryWorker

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest minor version still supported by the managed offerings councils use, and the newest
# the validator knows.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
SECRET_NAME = "neglect-service"
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|KEY$|DATABASE_URL", re.IGNORECASE)
KEK_FILE = "NEGLECT_KEY_ENCRYPTION_KEY_FILE"
EGRESS_PROXY = "NEGLECT_WEBHOOK_EGRESS_PROXY"
# How long a stopping worker lets its batch in flight finish: the dataclass field's default,
# which stays on the class (the CLI keeps it).
WORKER_DRAIN_S = DeliveryWorker.shutdown_grace_s
# After the drain a stopping worker records what was sent and releases the rest: a few
# statements, with room for a slow database, before SIGKILL.
AFTER_DRAIN_S = 10


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in manifests() if document["kind"] == kind]


def the(kind: str) -> dict[str, Any]:
    (document,) = by_kind(kind)
    return document


def component(kind: str, name: str) -> dict[str, Any]:
    """The one document of `kind` labelled `app.kubernetes.io/component: name`."""
    (document,) = [
        d
        for d in by_kind(kind)
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name
    ]
    return document


def api_deployment() -> dict[str, Any]:
    return component("Deployment", "api")


def worker_deployment() -> dict[str, Any]:
    return component("Deployment", "webhook-worker")


def pod_specs() -> list[dict[str, Any]]:
    specs = [d["spec"]["template"]["spec"] for d in by_kind("Deployment") + by_kind("Job")]
    specs += [c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in by_kind("CronJob")]
    return specs


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("file_name", "document"),
    manifests(),
    ids=[f"{name}:{doc['kind']}" for name, doc in manifests()],
)
def test_manifest_validates_against_the_kubernetes_schema(
    file_name: str, document: dict[str, Any], version: str
) -> None:
    # Strict: a misspelt or misplaced field is an error, not silently ignored by the API server.
    kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_refuses_a_misplaced_field() -> None:
    """The check above can fail: a probe put one level too high is caught."""
    deployment = copy.deepcopy(api_deployment())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    deployment["spec"]["template"]["spec"]["readinessProbe"] = container["readinessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_every_kind_the_deployment_needs_is_there() -> None:
    kinds = sorted(document["kind"] for _, document in manifests())
    for kind in (
        "Deployment",
        "Service",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "ServiceAccount",
    ):
        assert kind in kinds
    assert "Secret" not in kinds, "secret values never live in the repository"


def test_no_secret_value_is_written_in_a_manifest() -> None:
    for spec in pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            for variable in container.get("env", []):
                if SECRET_LOOKING.search(variable["name"]):
                    assert "value" not in variable or variable["name"].endswith("_FILE"), variable
                    if "valueFrom" in variable:
                        assert variable["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
    for key in the("ConfigMap")["data"]:
        assert not SECRET_LOOKING.search(key), key


def test_the_key_encryption_key_comes_from_the_secret_as_a_file() -> None:
    """Every pod that needs the key-encryption key reads it from a file the Secret mounts, and
    none is given the key itself as a variable."""
    for spec in [
        api_deployment()["spec"]["template"]["spec"],
        worker_deployment()["spec"]["template"]["spec"],
        the("Job")["spec"]["template"]["spec"],
    ]:
        (container,) = spec["containers"]
        variables = {v["name"]: v for v in container["env"]}
        assert "NEGLECT_KEY_ENCRYPTION_KEY" not in variables
        path = Path(variables[KEK_FILE]["value"])
        (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == SECRET_NAME
        (item,) = [i for i in volume["secret"]["items"] if i["path"] == path.name]
        assert item["key"] == "key-encryption-key"
        # Readable by the pod's group (fsGroup), the user the image runs as.
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]
        assert volume["secret"]["defaultMode"] & 0o040


def test_the_api_has_probes_and_shuts_down_gracefully() -> None:
    deployment = api_deployment()
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pause = int(api["lifecycle"]["preStop"]["exec"]["command"][1])
    graceful = int(the("ConfigMap")["data"]["NEGLECT_GRACEFUL_SHUTDOWN_S"])
    assert pod["terminationGracePeriodSeconds"] > pause + graceful
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert the("ConfigMap")["data"]["NEGLECT_WORKERS"] == "1"
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod.get("initContainers", []) + pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_budget_and_autoscaler_point_at_the_api_pods() -> None:
    deployment = api_deployment()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert the("Service")["spec"]["selector"].items() <= pod_labels.items()
    budget = component("PodDisruptionBudget", "api")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaler = the("HorizontalPodAutoscaler")["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert autoscaler["minReplicas"] > budget["minAvailable"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


def secret_key_of(container: dict[str, Any], variable: str) -> str | None:
    for entry in container.get("env", []):
        if entry["name"] == variable:
            key: str = entry["valueFrom"]["secretKeyRef"]["key"]
            return key
    return None


def test_migrations_run_as_a_job_as_the_owner_on_the_direct_connection() -> None:
    job = the("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "sh",
        "-c",
        "neglect-service migrate && neglect-service db roles",
    ]
    assert secret_key_of(container, "NEGLECT_OWNER_DATABASE_URL") == "owner-database-url"
    assert secret_key_of(container, "NEGLECT_RUNTIME_ROLE_PASSWORD") == "runtime-role-password"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_release_steps_first_apply_holds_what_the_job_needs_and_no_api() -> None:
    """`kubectl apply -k ... -l 'app.kubernetes.io/component in (shared,migrate)'` (README)."""
    first = [
        document
        for _, document in manifests()
        if document["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        in {"shared", "migrate"}
    ]
    assert sorted(d["kind"] for d in first) == ["ConfigMap", "Job", "ServiceAccount"]
    pod = the("Job")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == the("ServiceAccount")["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": the("ConfigMap")["metadata"]["name"]}}
    ]


def test_the_api_connects_as_the_runtime_role_only() -> None:
    """Least privilege: the owner's URL is given to the migration Job alone."""
    (container,) = api_deployment()["spec"]["template"]["spec"]["containers"]
    assert secret_key_of(container, "DATABASE_URL") == "database-url"
    read = next(v for v in container["env"] if v["name"] == "NEGLECT_READ_DATABASE_URL")
    assert read["valueFrom"]["secretKeyRef"] == {
        "name": SECRET_NAME,
        "key": "read-database-url",
        "optional": True,
    }
    assert the("ConfigMap")["data"]["NEGLECT_DB_POOL_MODE"] == "transaction"
    for spec in pod_specs():
        for container in spec["containers"]:
            if container["name"] != "migrate":
                assert secret_key_of(container, "NEGLECT_OWNER_DATABASE_URL") is None
                assert secret_key_of(container, "NEGLECT_RUNTIME_ROLE_PASSWORD") is None


def test_the_webhook_workers_run_the_worker_command() -> None:
    deployment = worker_deployment()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["neglect-service", "worker"]
    (api,) = api_deployment()["spec"]["template"]["spec"]["containers"]
    assert container["image"] == api["image"]
    # Several are safe (FOR UPDATE SKIP LOCKED); two keep deliveries going through a restart.
    assert deployment["spec"]["replicas"] == 2
    assert container["envFrom"] == [
        {"configMapRef": {"name": the("ConfigMap")["metadata"]["name"]}}
    ]
    assert pod["serviceAccountName"] == the("ServiceAccount")["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    # It serves no HTTP: no port, and no probe pretending to check it over HTTP.
    assert "ports" not in container
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "httpGet" not in container.get(probe, {})
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]


def test_the_webhook_workers_connect_as_the_runtime_role_only() -> None:
    (container,) = worker_deployment()["spec"]["template"]["spec"]["containers"]
    assert secret_key_of(container, "DATABASE_URL") == "database-url"
    assert secret_key_of(container, "NEGLECT_OWNER_DATABASE_URL") is None
    assert secret_key_of(container, "NEGLECT_RUNTIME_ROLE_PASSWORD") is None
    assert {v["name"] for v in container["env"]} == {"DATABASE_URL", KEK_FILE}
    # Through PgBouncer in transaction mode, as the API.
    assert the("ConfigMap")["data"]["NEGLECT_DB_POOL_MODE"] == "transaction"


def test_the_webhook_workers_outlast_their_drain() -> None:
    """SIGTERM gives the batch in flight `shutdown_grace_s` to finish, then it is recorded and
    released: the kubelet's SIGKILL comes only after that."""
    deployment = worker_deployment()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= WORKER_DRAIN_S + AFTER_DRAIN_S
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_webhook_workers_have_their_own_pods_and_budget() -> None:
    """The Service never sends a request to a worker, the API's budget and autoscaler never
    count one, and a drain takes the workers one at a time."""
    deployment = worker_deployment()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not the("Service")["spec"]["selector"].items() <= pod_labels.items()
    api_budget = component("PodDisruptionBudget", "api")["spec"]
    assert not api_budget["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaled = the("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"]
    assert autoscaled != deployment["metadata"]["name"]
    budget = component("PodDisruptionBudget", "webhook-worker")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 0 < budget["minAvailable"] < deployment["spec"]["replicas"]
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_the_webhook_egress_proxy_is_optional_and_no_network_is_allowed() -> None:
    settings = the("ConfigMap")["data"]
    assert settings[EGRESS_PROXY] == ""
    assert "NEGLECT_WEBHOOK_ALLOWED_NETWORKS" not in settings
    for spec in pod_specs():
        for container in spec["containers"]:
            names = {v["name"] for v in container.get("env", [])}
            assert "NEGLECT_WEBHOOK_ALLOWED_NETWORKS" not in names


def test_an_empty_egress_proxy_from_the_deployment_means_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the ConfigMap and compose give when no proxy is wanted is read as no proxy."""
    monkeypatch.setenv(EGRESS_PROXY, "")
    assert Settings(database_url=None).webhook_egress_proxy is None


# --- compose.yaml -------------------------------------------------------------------------------

COMPOSE_FILE = ROOT / "compose.yaml"
COMPOSE_SCHEMA = ROOT / "tests" / "deploy_schemas" / "compose-spec.json"
COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD",
    "NEGLECT_RUNTIME_ROLE_PASSWORD",
    "NEGLECT_KEY_ENCRYPTION_KEY",
}
COMPOSE_PASSWORDS = {"POSTGRES_PASSWORD", "NEGLECT_RUNTIME_ROLE_PASSWORD"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def compose_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_validates_against_the_compose_specification() -> None:
    assert compose_errors(compose()) == []


def test_the_compose_schema_refuses_a_misplaced_field() -> None:
    """The check above can fail: `replicas` outside `deploy` is caught."""
    document = compose()
    document["services"]["api"]["replicas"] = 2
    assert compose_errors(document) != []


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"],  # noqa: S607
        capture_output=True,
        check=False,
        timeout=30,
    )
    return probe.returncode == 0


def test_compose_describes_the_deployment() -> None:
    services = compose()["services"]
    assert {"postgres", "pgbouncer", "migrate", "api"} <= services.keys()
    assert services["pgbouncer"]["environment"]["POOL_MODE"] == "transaction"
    migrate = services["migrate"]
    assert migrate["command"] == ["sh", "-c", "neglect-service migrate && neglect-service db roles"]
    # The owner on the direct connection; the runtime role through PgBouncer, named for `db roles`.
    assert "@postgres:5432/" in migrate["environment"]["NEGLECT_OWNER_DATABASE_URL"]
    api = services["api"]
    assert api["deploy"]["replicas"] == 2
    assert "@pgbouncer:6432/" in api["environment"]["DATABASE_URL"]
    assert api["environment"]["NEGLECT_DB_POOL_MODE"] == "transaction"
    assert "NEGLECT_OWNER_DATABASE_URL" not in api["environment"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["environment"]["NEGLECT_WORKERS"] == "1"


def compose_seconds(duration: str) -> int:
    """A compose duration such as `40s` or `1m30s`, in seconds."""
    parsed = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parsed is not None, duration
    return int(parsed[1] or 0) * 60 + int(parsed[2] or 0)


def test_compose_runs_the_webhook_workers() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["command"] == ["neglect-service", "worker"]
    assert worker["image"] == services["api"]["image"]
    assert worker["deploy"]["replicas"] == 2
    # The runtime role through PgBouncer in transaction mode, never the owner.
    assert "//neglect_app:" in worker["environment"]["DATABASE_URL"]
    assert "@pgbouncer:6432/" in worker["environment"]["DATABASE_URL"]
    assert worker["environment"]["NEGLECT_DB_POOL_MODE"] == "transaction"
    assert "NEGLECT_OWNER_DATABASE_URL" not in worker["environment"]
    assert "NEGLECT_RUNTIME_ROLE_PASSWORD" not in worker["environment"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert compose_seconds(worker["stop_grace_period"]) >= WORKER_DRAIN_S + AFTER_DRAIN_S
    assert worker["restart"] == "unless-stopped"
    # The egress proxy is optional, from the environment; no network is ever allowed in.
    assert worker["environment"][EGRESS_PROXY] == "${NEGLECT_WEBHOOK_EGRESS_PROXY:-}"
    for service in services.values():
        assert "NEGLECT_WEBHOOK_ALLOWED_NETWORKS" not in service.get("environment", {})


def test_compose_holds_no_secret_value() -> None:
    text = COMPOSE_FILE.read_text()
    for name in COMPOSE_PASSWORDS:
        # Each is only ever a reference compose refuses to start without.
        assert re.search(rf"\${{{name}:\?", text)
        assert not re.search(rf"^\s*{name}:\s*[^$\s]", text, re.MULTILINE)
    # The key-encryption key is a compose secret taken from the environment, mounted as a file.
    document = compose()
    assert document["secrets"]["neglect_key_encryption_key"] == {
        "environment": "NEGLECT_KEY_ENCRYPTION_KEY"
    }
    for name in ("migrate", "api", "worker"):
        service = document["services"][name]
        assert "NEGLECT_KEY_ENCRYPTION_KEY" not in service["environment"]
        assert service["environment"][KEK_FILE] == "/run/secrets/neglect_key_encryption_key"
        assert service["secrets"] == ["neglect_key_encryption_key"]


def test_docker_compose_accepts_the_compose_file_where_docker_is_present() -> None:
    """`docker compose config` where the Compose plugin is installed; without the secrets in the
    environment compose refuses, as the file asks."""
    if not docker_compose_available():
        # No plugin on this machine: the Compose Specification's schema is the check.
        assert compose_errors(compose()) == []
        return
    env = {key: value for key, value in os.environ.items() if key not in COMPOSE_SECRETS}
    refused = subprocess.run(  # noqa: S603 (docker from PATH with fixed arguments, no shell)
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert refused.returncode != 0
    env |= {name: "not-a-real-secret" for name in COMPOSE_SECRETS}
    accepted = subprocess.run(  # noqa: S603 (docker from PATH with fixed arguments, no shell)
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert accepted.returncode == 0, accepted.stderr


# --- Dockerfile ---------------------------------------------------------------------------------


def test_the_image_builds_from_the_lock_on_a_pinned_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    dockerfile = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base[1])
    assert re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS (\w+)$", dockerfile, re.MULTILINE) == [
        "build",
        "runtime",
    ]
    build, runtime = dockerfile.split("AS runtime")
    assert "--require-hashes --no-deps --no-build-isolation" in build
    assert "--wheel-dir /wheels -r requirements.lock" in build
    assert "pip install --no-index --no-deps /wheels/*.whl" in runtime
    assert "requirements-dev.lock" not in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "requirements.lock" not in ignored
    # Neither the dev tools' lock nor the tests reach the build context.
    assert {"requirements-dev.lock", "tests", "bench"} <= set(ignored)
    # Not root, by number (Kubernetes' runAsNonRoot can check a number, not a name).
    (user,) = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert int(user.split(":")[0]) > 0
    # One process per container is a setting, and SIGTERM reaches uvicorn (exec, no shell left).
    assert "exec uvicorn" in runtime
    assert "NEGLECT_WORKERS" in runtime
    for copied in re.findall(r"^COPY (\S+) ", dockerfile, re.MULTILINE):
        if not copied.startswith("--"):
            assert (ROOT / copied).exists(), copied
