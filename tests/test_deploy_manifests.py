"""Kubernetes manifests of the scale-apart layout (deploy/k8s).

They validate against the Kubernetes schemas of a pinned version (kubernetes-validate), checkov finds
nothing but the documented skips, and they are wired as the layout needs: the entry reaches each model
Service by its DNS name and port, the HorizontalPodAutoscaler drives the image Deployment, every
container has probes on BentoML's own endpoints and resource requests, tokens come from a Secret. The
last test runs each Deployment's container arguments through the Bento's own entrypoint, on a
read-only copy of the Bento, and the three processes answer as the three pods would.

The tools live in .venv-deploy, pinned by deploy/requirements-validate.lock: `make test` installs them first
(`make deploy-tools`); the tests that need them fail, never skip, when they are missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from conftest import REPO_ROOT, VENV_BIN, Server, free_port, sample_requests

from rakuten_classifier.config import Settings

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
DEPLOY_BIN = REPO_ROOT / ".venv-deploy" / "bin"
# The Kubernetes version whose schemas the manifests must satisfy (the Makefile's DEPLOY_K8S_VERSION).
KUBERNETES_VERSION = "1.34.0"
# Checkov checks not applied; deploy/k8s/README.md says why, one line each (the Makefile's DEPLOY_CHECKOV_SKIP).
SKIPPED_CHECKS = ("CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_40", "CKV_K8S_43")
# What the deployment of each BentoML service is called.
DEPLOYMENTS = {
    "RakutenClassifier": "rakuten-entry",
    "TextModelService": "rakuten-text",
    "ImageModelService": "rakuten-image",
}
SECRET_SETTINGS = ("RAKUTEN_ADMIN_TOKEN", "RAKUTEN_PREDICT_TOKEN", "RAKUTEN_DB_URL")


def manifest_files() -> list[Path]:
    return sorted(K8S_DIR.rglob("*.yaml"))


@cache
def documents() -> list[dict]:
    """Every resource of every manifest (parsed once; the tests only read them)."""
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource(kind: str, name: str) -> dict:
    found = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: str) -> dict:
    containers = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: str) -> dict[str, dict]:
    """The container's env entries by name (each entry as written: value or valueFrom)."""
    return {entry["name"]: entry for entry in container(deployment).get("env", [])}


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions with In) matches these labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def pod_labels(deployment: str) -> dict:
    return resource("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]


def served_service(deployment: str) -> str:
    """The BentoML service a Deployment's container serves: --service-name, else the Bento's own service."""
    args = container(deployment)["args"]
    if "--service-name" in args:
        assert args[0] == "start-http-server", args
        return args[args.index("--service-name") + 1]
    assert args[0] == "serve", args
    return re.search(r'^service: "service:(\w+)"', (REPO_ROOT / "bentofile.yaml").read_text(), re.M)[1]  # type: ignore[index]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (CPU or memory) as a number: '500m' -> 0.5, '2Gi' -> 2 * 2**30."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * units.get(unit, 1)


def makefile_variable(name: str) -> str:
    return re.search(rf"^{name} := (.+)$", (REPO_ROOT / "Makefile").read_text(), re.M)[1].strip()  # type: ignore[index]


@pytest.fixture(scope="module")
def deploy_tools() -> Path:
    """.venv-deploy's kubernetes-validate and checkov, as `make deploy-tools` installed them from the lock."""
    lock = REPO_ROOT / "deploy" / "requirements-validate.lock"
    stamp = DEPLOY_BIN.parent / ".installed-stamp"  # the Makefile's DEPLOY_STAMP, touched after installing
    missing = [tool for tool in ("kubernetes-validate", "checkov") if not (DEPLOY_BIN / tool).is_file()]
    if missing or not stamp.is_file():
        pytest.fail(
            f"{' and '.join(missing) or 'the tools'} not installed in {DEPLOY_BIN.parent}: run `make deploy-tools`"
        )
    if stamp.stat().st_mtime < lock.stat().st_mtime:
        pytest.fail(f"{lock.name} changed since {DEPLOY_BIN.parent} was built: run `make deploy-tools`")
    return DEPLOY_BIN


def checkov(deploy_tools: Path, *skip: str) -> tuple[int, dict]:
    """Checkov's Kubernetes checks over deploy/k8s: exit status and JSON report."""
    command = [str(deploy_tools / "checkov"), "--framework", "kubernetes", "-d", str(K8S_DIR)]
    command += ["--skip-download", "--output", "json"] + (["--skip-check", ",".join(skip)] if skip else [])
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    report = json.loads(run.stdout)
    assert isinstance(report, dict), run.stdout[:500]  # one framework: one report
    assert report["check_type"] == "kubernetes"
    return run.returncode, report


@pytest.mark.slow
def test_every_manifest_validates_against_the_pinned_kubernetes_schemas(deploy_tools, tmp_path):
    files = [str(path) for path in manifest_files()]
    run = subprocess.run(
        [str(deploy_tools / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    passed = [line for line in run.stdout.splitlines() if " passed for resource " in line]
    assert len(passed) == len(documents()), run.stdout  # each resource checked, none skipped as unknown
    assert "ERROR" not in run.stdout + run.stderr
    assert "WARN" not in run.stdout + run.stderr

    # The same run fails on a misspelt field (strict) and on a wrong type: the validation is not a no-op.
    broken = tmp_path / "broken.yaml"
    text = (K8S_DIR / "image-model.yaml").read_text()
    broken.write_text(
        text.replace("revisionHistoryLimit:", "revisionHistoryLimt:").replace("minReplicas: 2", "minReplicas: two")
    )
    run = subprocess.run(
        [str(deploy_tools / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "revisionHistoryLimt" in run.stdout, run.stdout
    assert "'two' is not of type 'integer'" in run.stdout, run.stdout


@pytest.mark.slow
def test_checkov_passes_every_kubernetes_check_but_the_documented_skips(deploy_tools):
    returncode, report = checkov(deploy_tools, *SKIPPED_CHECKS)
    summary, results = report["summary"], report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert returncode == 0
    assert summary["parsing_errors"] == 0, results.get("parsing_errors")
    # The scan saw the three Deployments and passed the checks the layout relies on for each.
    passed = {(c["check_id"], c["resource"]) for c in results["passed_checks"]}
    essentials = {
        "CKV_K8S_8": "liveness probe",
        "CKV_K8S_9": "readiness probe",
        "CKV_K8S_10": "CPU requests",
        "CKV_K8S_11": "CPU limits",
        "CKV_K8S_12": "memory requests",
        "CKV_K8S_13": "memory limits",
        "CKV_K8S_14": "image tag fixed, not latest",
        "CKV_K8S_20": "no privilege escalation",
        "CKV_K8S_22": "read-only root filesystem",
        "CKV_K8S_23": "no root containers",
        "CKV_K8S_28": "NET_RAW dropped",
        "CKV_K8S_31": "seccomp RuntimeDefault",
        "CKV_K8S_38": "no service account token",
        "CKV2_K8S_6": "a NetworkPolicy",
    }
    for deployment in DEPLOYMENTS.values():
        # Checks of the Deployment name it; graph checks (CKV2) name its pod template, with its labels.
        names = (f"Deployment.rakuten.{deployment}", f"Pod.rakuten.{deployment}.")
        seen = {check for check, name in passed if name == names[0] or name.startswith(names[1])}
        missing = {check: what for check, what in essentials.items() if check not in seen}
        assert not missing, (deployment, missing)


@pytest.mark.slow
def test_each_skipped_check_is_one_the_manifests_really_fail(deploy_tools):
    """A skip that no longer matches a failure is stale: remove it from the list, the Makefile and the README."""
    returncode, report = checkov(deploy_tools)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert returncode != 0
    assert failed == set(SKIPPED_CHECKS)


def test_make_deploy_check_uses_the_same_version_and_skips_and_the_readme_explains_each_skip():
    assert makefile_variable("DEPLOY_K8S_VERSION") == KUBERNETES_VERSION
    assert makefile_variable("DEPLOY_CHECKOV_SKIP").split(",") == list(SKIPPED_CHECKS)
    readme = (K8S_DIR / "README.md").read_text()
    for check in SKIPPED_CHECKS:
        lines = [line for line in readme.splitlines() if check in line]
        assert len(lines) == 1, (check, lines)
        assert len(lines[0]) > len(check) + 40, lines  # the check and its reason


def test_entry_reaches_each_model_service_by_its_service_dns_name_and_port():
    entry_env = env_of("rakuten-entry")
    for setting, service_class in (
        ("RAKUTEN_TEXT_SERVICE_URL", "TextModelService"),
        ("RAKUTEN_IMAGE_SERVICE_URL", "ImageModelService"),
    ):
        deployment = DEPLOYMENTS[service_class]
        assert served_service(deployment) == service_class
        assert re.search(rf"^class {service_class}\b", (REPO_ROOT / "service.py").read_text(), re.M)
        url = urlsplit(entry_env[setting]["value"])
        service = resource("Service", url.hostname.split(".")[0])
        namespace = service["metadata"]["namespace"]
        assert url.scheme == "http"
        assert url.hostname == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
        [port] = [p for p in service["spec"]["ports"] if p["port"] == url.port]
        # The Service selects the pods of the Deployment serving that class, on the port it listens on.
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
        assert not any(
            selects({"matchLabels": service["spec"]["selector"]}, pod_labels(other))
            for other in DEPLOYMENTS.values()
            if other != deployment
        )
        [container_port] = [p for p in container(deployment)["ports"] if p["name"] == port["targetPort"]]
        args = container(deployment)["args"]
        assert container_port["containerPort"] == int(args[args.index("--port") + 1])
    # The entry serves the Bento's own service and starts neither model service itself (both URLs set).
    assert served_service("rakuten-entry") == "RakutenClassifier"


def test_horizontal_pod_autoscaler_scales_the_image_deployment_on_cpu():
    [hpa] = [d for d in documents() if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "rakuten-image")
    assert hpa["metadata"]["namespace"] == resource("Deployment", "rakuten-image")["metadata"]["namespace"]
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilisation is measured against the request, which must therefore be set.
    assert quantity(container("rakuten-image")["resources"]["requests"]["cpu"]) >= 1


def test_every_container_has_probes_on_bentoml_endpoints_and_resource_requests():
    # Memory at least what a pod was measured holding (docs/benchmarks.md, "Lean serving"): an image pod
    # (arbiter + one torch-free worker) ~345 MiB after 1,000 requests.
    minimum = {"rakuten-image": (1, 512 * 2**20), "rakuten-text": (0.5, 2**30), "rakuten-entry": (0.5, 2**30)}
    for deployment, (cpu, memory) in minimum.items():
        spec = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            assert spec[probe]["httpGet"]["path"] == path, (deployment, probe)
            assert spec[probe]["httpGet"]["port"] in ports, (deployment, probe)
        requests, limits = spec["resources"]["requests"], spec["resources"]["limits"]
        assert quantity(requests["cpu"]) >= cpu, deployment
        assert quantity(requests["memory"]) >= memory, deployment
        assert quantity(limits["cpu"]) >= quantity(requests["cpu"]), deployment
        assert quantity(limits["memory"]) >= quantity(requests["memory"]), deployment
    # The entry's /readyz waits up to 5 s on each model service (BentoML's runner probe): its timeout is longer.
    assert container("rakuten-entry")["readinessProbe"]["timeoutSeconds"] > 5


def test_tokens_and_the_database_url_come_from_the_secret_and_only_the_entry_gets_them():
    entry_env = env_of("rakuten-entry")
    [secret] = [d for d in documents() if d["kind"] == "Secret"]
    for name in SECRET_SETTINGS:
        reference = entry_env[name]["valueFrom"]["secretKeyRef"]
        assert "value" not in entry_env[name]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
    assert entry_env["RAKUTEN_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"].get("optional") is not True
    assert entry_env["RAKUTEN_DB_URL"]["valueFrom"]["secretKeyRef"].get("optional") is not True
    # The Secret with placeholders is an example beside the applied files, never applied with them.
    assert secret_path().parent != K8S_DIR
    mlflow = entry_env["RAKUTEN_MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]
    assert urlsplit(resource("ConfigMap", mlflow["name"])["data"][mlflow["key"]]).scheme in ("http", "https")
    for deployment in ("rakuten-text", "rakuten-image"):
        assert "secretKeyRef" not in json.dumps(resource("Deployment", deployment)), deployment
    # No credential is written in a manifest applied with the others: secret-like settings are references,
    # and no URL in the ConfigMap carries a password.
    for deployment in DEPLOYMENTS.values():
        for name, entry in env_of(deployment).items():
            if re.search(r"TOKEN|PASSWORD|SECRET|DB_URL", name):
                assert "secretKeyRef" in entry.get("valueFrom", {}), (deployment, name)
    for configmap in (d for d in documents() if d["kind"] == "ConfigMap"):
        assert all(urlsplit(value).password is None for value in configmap["data"].values())


def secret_path() -> Path:
    [path] = [p for p in manifest_files() if "kind: Secret" in p.read_text()]
    return path


def test_every_rakuten_variable_names_a_setting():
    fields = set(Settings.model_fields)
    names = [name for d in DEPLOYMENTS.values() for name in env_of(d)]
    names += [key for d in documents() if d["kind"] == "ConfigMap" for key in d["data"]]
    rakuten = [name for name in names if name.startswith("RAKUTEN_")]
    assert rakuten
    assert all(name.removeprefix("RAKUTEN_").lower() in fields for name in rakuten), rakuten


def test_pods_run_as_non_root_on_a_read_only_root_with_each_written_path_on_a_scratch_volume():
    for deployment in DEPLOYMENTS.values():
        pod = resource("Deployment", deployment)["spec"]["template"]["spec"]
        spec = container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        context = spec["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        mounts = [m["mountPath"] for m in spec["volumeMounts"] if m["name"] in scratch]
        env = env_of(deployment)
        # BentoML's home (store folders, Prometheus files), the data root, caches and /tmp (BentoML's sockets).
        written = [
            env[name]["value"] for name in ("BENTOML_HOME", "RAKUTEN_DATA_ROOT", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")
        ]
        for path in [*written, "/tmp"]:
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), (deployment, path)
        # The Bento itself stays on the read-only root: no scratch volume hides it.
        assert not any(
            "/home/bentoml/bento".startswith(m.rstrip("/") + "/") or m == "/home/bentoml/bento" for m in mounts
        )


def test_every_resource_lives_in_the_namespace_and_one_image_tagged_with_the_project_version_runs_everywhere():
    [namespace] = [d for d in documents() if d["kind"] == "Namespace"]
    assert manifest_files()[0].name.startswith("00-")
    assert "kind: Namespace" in manifest_files()[0].read_text()
    for document in documents():
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == namespace["metadata"]["name"], document["metadata"]
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {container(d)["image"] for d in DEPLOYMENTS.values()} == {f"rakuten-classifier:{version}"}


def test_only_the_entry_pods_may_reach_the_model_services():
    policies = [d for d in documents() if d["kind"] == "NetworkPolicy"]
    for deployment in ("rakuten-text", "rakuten-image"):
        [policy] = [p for p in policies if selects(p["spec"]["podSelector"], pod_labels(deployment))]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        sources = [source for rule in policy["spec"]["ingress"] for source in rule["from"]]
        assert sources
        assert all(set(source) == {"podSelector"} for source in sources)
        for other in DEPLOYMENTS.values():
            allowed = any(selects(source["podSelector"], pod_labels(other)) for source in sources)
            assert allowed == (other == "rakuten-entry"), (deployment, other)


# --- The Deployments' container arguments, run by the Bento's own entrypoint -------------------------------------


def start_pod(serve, request, deployment: str, root: Path, bento: Path, env: dict[str, str]) -> Server:
    """One Deployment's container run here: its args through the Bento's entrypoint, its env, its volumes.

    The pod's filesystem is ``root``: a read-only copy of the Bento at /home/bentoml/bento and, writable,
    each emptyDir at its mount path; paths in the env are moved under ``root``. Only the port (free here)
    and the host (loopback) of the args change. Not waited for.
    """
    pod = resource("Deployment", deployment)["spec"]["template"]["spec"]
    spec = container(deployment)
    for volume in pod["volumes"]:
        [mount] = [m["mountPath"] for m in spec["volumeMounts"] if m["name"] == volume["name"]]
        (root / mount.lstrip("/")).mkdir(parents=True)
    port = free_port()
    args = list(spec["args"])
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    pod_env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(root / "home" / "bentoml"),
        "TMPDIR": str(root / "tmp"),
        "BENTO_PATH": str(bento),  # the image's ENV (BentoML's Dockerfile)
        "BENTOML_CONTAINERIZED": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "HF_HUB_OFFLINE": "1",
    }
    for name, entry in env_of(deployment).items():
        value = env.get(name, entry.get("value"))
        if value is not None:
            pod_env[name] = str(root / value.lstrip("/")) if value.startswith("/") else value
    pod_env.update({name: value for name, value in env.items() if name not in pod_env})
    command = ["bash", str(bento / "env" / "docker" / "entrypoint.sh"), *args]
    return serve.start(request, command, port, pod_env, bento, root.parent / f"{deployment}.log")


def outside_volumes(root: Path, deployment: str) -> dict[str, int]:
    """Every path of a pod's filesystem that no scratch volume holds, with a file's modification time: what a
    read-only root would have refused to change (chmod alone would not show it: the suite may run as root)."""
    spec = container(deployment)
    mounts = [root / m["mountPath"].lstrip("/") for m in spec["volumeMounts"]]
    return {
        str(path.relative_to(root)): 0 if path.is_dir() else path.lstat().st_mtime_ns  # a folder: its being there
        for path in root.rglob("*")
        if not any(path == mount or mount in path.parents for mount in mounts)
        # Python writes bytecode caches where it may and silently does without where it may not.
        and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def image_root(bento, tmp_path_factory) -> Iterator[Path]:
    """The container image's filesystem as far as the Bento goes: /home/bentoml/bento laid out as
    `bentoml containerize` copies it (the built Bento plus its models: what `bentoml export` writes)."""
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    tag, _ = bento
    work = tmp_path_factory.mktemp("image")
    archive = work / "x.bento"
    subprocess.run(
        [str(VENV_BIN / "bentoml"), "export", tag, str(archive)], env=env, check=True, capture_output=True, timeout=300
    )
    bento = work / "root" / "home" / "bentoml" / "bento"
    bento.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(bento, filter="data")
    assert (bento / "bento.yaml").is_file()
    assert any((bento / "models").iterdir())
    assert (bento / "env" / "docker" / "entrypoint.sh").is_file()
    yield work / "root"
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_the_deployments_container_arguments_serve_the_layout_from_a_read_only_bento(
    trained, image_root, sample_dir, serve, request, tmp_path
):
    pods: dict[str, Server] = {}
    before: dict[str, dict[str, int]] = {}

    def start(deployment: str, env: dict[str, str]) -> Server:
        root = tmp_path / deployment
        shutil.copytree(image_root, root, symlinks=True)  # each pod its own filesystem, volumes inside
        pods[deployment] = start_pod(serve, request, deployment, root, root / "home" / "bentoml" / "bento", env)
        before[deployment] = outside_volumes(root, deployment)
        return pods[deployment]

    for deployment in ("rakuten-text", "rakuten-image"):
        start(deployment, {})
    for pod in pods.values():
        pod.wait_ready(timeout=300)
    entry_env = {
        # The Services' DNS names, here: each model pod's own address.
        "RAKUTEN_TEXT_SERVICE_URL": pods["rakuten-text"].url,
        "RAKUTEN_IMAGE_SERVICE_URL": pods["rakuten-image"].url,
        # What the Secret and the ConfigMap would hold.
        "RAKUTEN_ADMIN_TOKEN": "admin-token",
        "RAKUTEN_DB_URL": f"sqlite:///{tmp_path / 'entry-store.db'}",
        "RAKUTEN_MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    }
    entry = start("rakuten-entry", entry_env)
    entry.wait_ready(timeout=300)

    assert set(pods["rakuten-text"].workers()) == {"TextModelService"}
    assert set(pods["rakuten-image"].workers()) == {"ImageModelService"}
    assert set(entry.workers()) == {"RakutenClassifier"}  # no model worker of its own
    for pod in pods.values():
        assert httpx.get(f"{pod.url}/livez", timeout=10).status_code == 200

    health = httpx.get(f"{entry.url}/health", timeout=30).json()
    assert health["status"] == "ok", health["problems"]
    assert health["model_services"]["image"]["loaded"] == [trained["image"]["tag"]]
    assert health["model_services"]["text"]["loaded"] == [trained["text"]["tag"]]
    form, photo = sample_requests(sample_dir, 1)[0]
    answer = httpx.post(f"{entry.url}/predict_multimodal", data=form, files=photo, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"]
    assert answer.json()["image"]
    # The admin token from the Secret reached the entry's guard.
    assert httpx.get(f"{entry.url}/monitor/accuracy", timeout=30).status_code == 401
    headers = {"Authorization": "Bearer admin-token"}
    assert httpx.get(f"{entry.url}/monitor/accuracy", headers=headers, timeout=30).status_code == 200
    # Nothing outside the pods' scratch volumes was written: a read-only root filesystem would do.
    for deployment in pods:
        assert outside_volumes(tmp_path / deployment, deployment) == before[deployment], deployment
