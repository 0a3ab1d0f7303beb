"""The Kubernetes manifests (docker/kubernetes), checked without a cluster: every object
against the API schemas of Kubernetes 1.30 and 1.37 (kubernetes-validate, strict:
unknown fields fail), then what must hold between them: probes on the service's health
routes, selectors that match, the autoscaler's target, secrets only by reference."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "docker" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SECRET_NAMES = re.compile(r"KEY|URL|PASSWORD|SECRET|TOKEN", re.IGNORECASE)
WRITABLE = {"/tmp", "/data/store"}  # as the compose detector: nothing else is writable


def load_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


OBJECTS = load_objects()
DETECTOR = OBJECTS[("Deployment", "lvad-detector")]
WORKER = OBJECTS[("Deployment", "lvad-worker")]


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("key", sorted(OBJECTS), ids=lambda key: f"{key[0]}/{key[1]}")
def test_object_matches_the_api_schema(key, version):
    kubernetes_validate.validate(OBJECTS[key], version, strict=True)


def test_the_schema_check_catches_mistakes():
    broken = copy.deepcopy(DETECTOR)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert [image["name"] for image in kustomization["images"]] == ["lvad"]


def test_detector_probes_use_the_health_routes():
    [container] = containers(DETECTOR)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000} and "8000" in container["args"]
    probes = {name: container[name]["httpGet"] for name in
              ("readinessProbe", "livenessProbe", "startupProbe")}  # fmt: skip
    assert probes["readinessProbe"]["path"] == "/readyz"  # a model is served
    assert probes["livenessProbe"]["path"] == "/healthz"  # the process answers
    assert probes["startupProbe"]["path"] == "/healthz"
    assert all(probe["port"] in ports for probe in probes.values())


def test_detector_runs_two_replicas_at_least_with_resources():
    assert DETECTOR["spec"]["replicas"] >= 2
    assert DETECTOR["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    for deployment in (DETECTOR, WORKER):
        [container] = containers(deployment)
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
        threads = {e["name"]: e.get("value") for e in container["env"]}["LVAD_TORCH_THREADS"]
        assert int(threads) == int(resources["limits"]["cpu"])  # torch sees the node's cores


@pytest.mark.parametrize("deployment", [DETECTOR, WORKER], ids=["detector", "worker"])
def test_pods_run_as_the_image_user_on_a_read_only_root(deployment):
    image_user = re.search(r"^USER (\d+):(\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(image_user[1]), int(image_user[2])
    )  # fmt: skip
    assert pod["automountServiceAccountToken"] is False
    [container] = containers(deployment)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounted >= WRITABLE
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert all("emptyDir" in volumes[mount["name"]] for mount in container["volumeMounts"])


@pytest.mark.parametrize("deployment", [DETECTOR, WORKER], ids=["detector", "worker"])
def test_secrets_come_from_the_secret_by_reference(deployment):
    [container] = containers(deployment)
    env = {item["name"]: item for item in container["env"]}
    wanted = {"LVAD_REGISTRY_URL": "registry-url", "LVAD_BROKER_URL": "broker-url"}
    if deployment is DETECTOR:
        wanted["LVAD_API_KEY"] = "api-key"
    for name, key in wanted.items():
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "lvad-secrets", "key": key}
    for name, item in env.items():
        assert not (SECRET_NAMES.search(name) and "value" in item), f"{name} is inline"
    config_maps = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert config_maps == ["lvad-config"] and ("ConfigMap", "lvad-config") in OBJECTS


def test_no_secret_and_no_secret_value_in_the_manifests():
    assert not [key for key in OBJECTS if key[0] == "Secret"]  # created beside, never committed
    config = OBJECTS[("ConfigMap", "lvad-config")]["data"]
    assert not [name for name in config if SECRET_NAMES.search(name)]


def test_service_pdb_and_hpa_point_at_the_detector():
    pod_labels = DETECTOR["spec"]["template"]["metadata"]["labels"]
    selector = DETECTOR["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert WORKER["spec"]["selector"]["matchLabels"] != selector  # the Service skips workers
    service = OBJECTS[("Service", "lvad")]["spec"]
    assert service["selector"] == selector
    assert [port["targetPort"] for port in service["ports"]] == ["http"]
    pdb = OBJECTS[("PodDisruptionBudget", "lvad-detector")]["spec"]
    assert pdb["selector"]["matchLabels"] == selector
    assert 1 <= pdb["minAvailable"] < DETECTOR["spec"]["replicas"]  # a drain can proceed
    hpa = OBJECTS[("HorizontalPodAutoscaler", "lvad-detector")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        DETECTOR["apiVersion"], DETECTOR["kind"], DETECTOR["metadata"]["name"]
    )  # fmt: skip
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == (
        "Utilization"
    )  # fmt: skip
    assert DETECTOR["spec"]["replicas"] <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_worker_runs_lvad_worker_from_the_detector_image():
    [worker] = containers(WORKER)
    [detector] = containers(DETECTOR)
    assert worker["args"] == ["worker"] and worker["image"] == detector["image"]
    assert "ports" not in worker and "readinessProbe" not in worker
