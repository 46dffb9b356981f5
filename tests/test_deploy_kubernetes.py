"""deploy/kubernetes/, without a cluster: every manifest validated offline, and the facts the
manifests share with the Dockerfile and the app checked against them.

kubernetes-validate bundles the API's JSON schemas; ``--strict`` rejects a field the schema
does not have (a misspelled probe is otherwise silently ignored by the API server's clients).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from app.service import create_app
from app.settings import Settings, load
from bench.harness import ROOT
from tests.app_support import BIN_DIR, http_get
from tests.conftest import serve
from tests.test_dockerfile import cmd, the

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def newest_kubernetes() -> str:
    """The newest Kubernetes version whose schemas kubernetes-validate bundles."""
    code = "import kubernetes_validate.utils as u; print(u.latest_version())"
    return subprocess.run(
        [os.path.join(BIN_DIR, "python"), "-c", code],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [
        os.path.join(BIN_DIR, "kubernetes-validate"), "--strict",
        "--kubernetes-version", newest_kubernetes(), *map(str, paths),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def resources() -> dict[str, dict[str, Any]]:
    """Every resource in deploy/kubernetes/ by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for resource in yaml.safe_load_all(path.read_text()):
            assert resource["kind"] not in found, f"a second {resource['kind']} in {path.name}"
            found[resource["kind"]] = resource
    return found


def container() -> dict[str, Any]:
    (only,) = resources()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def option(argv: list[str], name: str) -> str:
    """The value after ``name`` in a command line."""
    assert argv.count(name) == 1, f"{name} should appear once in {argv}"
    return argv[argv.index(name) + 1]


def test_every_manifest_validates_strictly_against_the_newest_kubernetes() -> None:
    version = newest_kubernetes()
    result = validate(*MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.startswith("INFO")]
    # One pass per resource, and no warning: an unknown kind (a CRD) only warns, unvalidated.
    assert len(passed) == len(KINDS), result.stdout
    assert all(f"against version {version.rsplit('.', 1)[0]}" in line for line in passed)
    assert "WARN" not in result.stdout + result.stderr
    assert set(resources()) == KINDS


def test_strict_validation_catches_a_misspelled_field(tmp_path: Path) -> None:
    """What the check above is worth: a probe name off by one letter fails it."""
    deployment = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
    broken = tmp_path / "deployment.yaml"
    broken.write_text(deployment.read_text().replace("readinessProbe:", "readinesProbe:"))
    result = validate(broken)
    assert result.returncode != 0
    assert "'readinesProbe' was unexpected" in result.stdout + result.stderr


def test_the_ports_are_the_images() -> None:
    (exposed,) = the("EXPOSE")
    (port,) = container()["ports"]
    assert port["containerPort"] == int(exposed)
    assert int(option(container()["command"], "--port")) == int(exposed)
    annotations = resources()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == exposed
    (service_port,) = resources()["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]


def test_the_command_is_the_images_and_runs_as_its_user() -> None:
    """The Dockerfile's CMD, options added after it; the pod runs as the image's numeric user."""
    image_cmd = cmd()
    assert container()["command"][: len(image_cmd)] == image_cmd
    (user,) = the("USER")
    uid, _, gid = user.partition(":")
    security = resources()["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))


#: Seconds the service may take to notice the drain file (each worker looks once a second).
NOTICE = 1
#: Seconds left between uvicorn's graceful timeout and the kill: the lifespan shutdown and exit.
KILL_MARGIN = 2


def env_value(name: str) -> str:
    [value] = [each["value"] for each in container()["env"] if each["name"] == name]
    assert isinstance(value, str)
    return value


def pre_stop_script() -> str:
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"], command
    script = command[2]
    assert isinstance(script, str)
    return script


def test_pre_stop_drains_through_the_services_drain_file() -> None:
    """preStop touches the very file the service watches, on a volume it may write to (the
    root filesystem is read-only), then sleeps, then removes it for a restarted container."""
    drain_file = env_value("CLOSEGUARD_DRAIN_FILE")
    script = pre_stop_script()
    assert re.fullmatch(
        r'touch "\$CLOSEGUARD_DRAIN_FILE" && sleep \d+; rm -f "\$CLOSEGUARD_DRAIN_FILE"', script
    ), script
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    volumes = resources()["Deployment"]["spec"]["template"]["spec"]["volumes"]
    volume = {each["name"]: each for each in volumes}[mounts[os.path.dirname(drain_file)]]
    assert "emptyDir" in volume
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    # The window is one the service accepts.
    window = env_value("CLOSEGUARD_DRAIN_WINDOW")
    assert load({"CLOSEGUARD_DRAIN_WINDOW": window}).drain_window == float(window)


def test_the_drain_ends_before_sigterm_and_the_records_before_the_kill() -> None:
    """preStop's sleep outlasts the notice and the window, so SIGTERM finds nothing open; then
    uvicorn's graceful shutdown and a margin, all inside the grace period, which Kubernetes
    counts from the start of preStop."""
    pod = resources()["Deployment"]["spec"]["template"]["spec"]
    match = re.search(r"sleep (\d+)", pre_stop_script())
    assert match is not None
    pause = int(match.group(1))
    window = float(env_value("CLOSEGUARD_DRAIN_WINDOW"))
    graceful = int(option(container()["command"], "--timeout-graceful-shutdown"))
    assert window > 0
    assert pause >= NOTICE + window
    assert pod["terminationGracePeriodSeconds"] > pause + graceful + KILL_MARGIN


def test_the_selectors_find_the_pods() -> None:
    found = resources()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        found["Deployment"]["spec"]["selector"]["matchLabels"],
        found["Service"]["spec"]["selector"],
        found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    target = found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        found["Deployment"]["metadata"]["name"],
    )


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_the_probes_and_the_scrape_path_are_served_by_the_app(probe: str, tmp_path: Path) -> None:
    """Both probes pass while the service serves; once the drain file exists, readiness fails
    (the Service stops sending clients) and liveness passes (no restart mid-drain)."""
    path = container()[probe]["httpGet"]["path"]
    assert container()[probe]["httpGet"]["port"] == container()["ports"][0]["name"]
    annotations = resources()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    drain_file = tmp_path / "drain"
    app = create_app(Settings(drain_file=str(drain_file)), registry=CollectorRegistry())
    with serve(app, "websockets-sansio", lifespan="on") as url:
        base = url.replace("ws://", "http://")
        status, _, _ = http_get(base + path)
        metrics_status, content_type, body = http_get(base + annotations["prometheus.io/path"])
        drain_file.touch()
        draining_status, _, _ = http_get(base + path)
    assert status == 200
    assert draining_status == (503 if probe == "readinessProbe" else 200)
    assert (metrics_status, content_type.split(";")[0]) == (200, "text/plain")
    assert "# TYPE closeguard_websocket_open_connections gauge" in body
