"""Deployment as code: the Kubernetes manifests validate against the Kubernetes JSON schemas
(bundled by kubernetes-validate, so no network is needed), the compose file describes the
deployment the README promises, and the Dockerfile installs from the lock.

`docker compose config` also checks the compose file wherever the Compose plugin is installed;
the structural checks below run everywhere.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest minor version still supported by the managed offerings councils use, and the newest
# the validator knows.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
SECRET_NAME = "neglect-service"
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|KEY$|DATABASE_URL", re.IGNORECASE)


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
    deployment = copy.deepcopy(the("Deployment"))
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
        assert not SECRET_LOOKING.search(key) or key == "NEGLECT_DB_POOL_MODE", key


def test_the_api_has_probes_and_shuts_down_gracefully() -> None:
    deployment = the("Deployment")
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
    for container in pod["initContainers"] + pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_budget_and_autoscaler_point_at_the_api_pods() -> None:
    deployment = the("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert the("Service")["spec"]["selector"].items() <= pod_labels.items()
    budget = the("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaler = the("HorizontalPodAutoscaler")["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert autoscaler["minReplicas"] > budget["minAvailable"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


def test_migrations_run_as_a_job_on_the_direct_connection() -> None:
    job = the("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["alembic", "upgrade", "head"]
    urls = [v for v in container["env"] if v["name"] == "DATABASE_URL"]
    assert urls[0]["valueFrom"]["secretKeyRef"]["key"] == "database-url-direct"
    (api,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    api_url = next(v for v in api["env"] if v["name"] == "DATABASE_URL")
    assert api_url["valueFrom"]["secretKeyRef"]["key"] == "database-url"


# --- compose.yaml -------------------------------------------------------------------------------

COMPOSE_FILE = ROOT / "compose.yaml"
COMPOSE_SECRETS = {"POSTGRES_PASSWORD", "NEGLECT_KEY_ENCRYPTION_KEY"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


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
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert "@postgres:5432/" in migrate["environment"]["DATABASE_URL"]
    api = services["api"]
    assert api["deploy"]["replicas"] == 2
    assert "@pgbouncer:6432/" in api["environment"]["DATABASE_URL"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["environment"]["NEGLECT_WORKERS"] == "1"


def test_compose_holds_no_secret_value() -> None:
    text = COMPOSE_FILE.read_text()
    for name in COMPOSE_SECRETS:
        # Each is only ever a reference compose refuses to start without.
        assert re.search(rf"\${{{name}:\?", text)
        assert not re.search(rf"^\s*{name}:\s*[^$\s]", text, re.MULTILINE)


def test_docker_compose_accepts_the_compose_file_where_docker_is_present() -> None:
    """`docker compose config` where the Compose plugin is installed; without the secrets in the
    environment compose refuses, as the file asks."""
    if not docker_compose_available():
        # Not installed here: the YAML itself is checked above.
        assert compose()["name"] == "neglect-service"
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
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base[1])
    assert re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS (\w+)$", dockerfile, re.MULTILINE) == [
        "build",
        "runtime",
    ]
    build, runtime = dockerfile.split("AS runtime")
    assert "--require-hashes --no-deps --wheel-dir /wheels -r requirements.lock" in build
    assert "pip install --no-index --no-deps /wheels/*.whl" in runtime
    assert "requirements-dev.lock" not in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "requirements.lock" not in ignored
    for copied in re.findall(r"^COPY (\S+) ", dockerfile, re.MULTILINE):
        if not copied.startswith("--"):
            assert (ROOT / copied).exists(), copied
