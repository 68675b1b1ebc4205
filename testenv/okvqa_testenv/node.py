"""A real Kubernetes node on this machine: containerd + runc, CNI bridge, kubelet, kube-proxy, CoreDNS.

Why: kwok only plays pods. To prove the project's images, its chart's MinIO and the whole in-cluster run,
pods must run for real. This node registers with the ControlPlane beside the kwok nodes and runs pods
from images that exist only locally (nothing is pulled from a registry).

Network: a Linux bridge (`okvqa0`, 10.250.77.1/24) made first, so the node, the API server and CoreDNS
have an address pods can reach. Pods get addresses on it from host-local IPAM and one route, to the
Service range; the bridge plugin runs with `isGateway: false` and `ipMasq: false`, forwarding is switched
on for this bridge alone and a FORWARD rule drops anything a pod sends off it, so pods have no way off
the machine. kube-proxy (iptables) gives ClusterIP Services; CoreDNS answers `*.svc.cluster.local`.

Needs root (namespaces, mounts, cgroups, iptables). containerd's content store and snapshots live in a
persistent cache (`node_cache_dir()`), so images built once stay for the next start; everything else
lives under the control plane's temporary directory. Stop puts the machine back as it was (host.py).

Settings this machine needs (measured): kubelet `failCgroupV1: false` (cgroup v1 hybrid) with the
cgroupfs driver and `protectKernelDefaults: false` (the tunables it then sets are restored on stop);
containerd `restrict_oom_score_adj` (root lacks CAP_SYS_RESOURCE here); the API server prefers InternalIP
to reach the kubelet.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from okvqa_testenv import host
from okvqa_testenv.api import Api, condition_true
from okvqa_testenv.paths import testenv_dir
from okvqa_testenv.pki import CLIENT_AUTH, SERVER_AUTH, ClusterCa
from okvqa_testenv.processes import Component, ControlPlaneError, free_ports, http_ok, wait_until

NODE_NAME = "okvqa-node-0"
BRIDGE = "okvqa0"
POD_CIDR = ipaddress.ip_network("10.250.77.0/24")
NODE_IP = "10.250.77.1"
CLUSTER_DOMAIN = "cluster.local"
NODE_LABELS = {"okvqa.dev/pool": "real"}
# kwok's nodes get this taint on a plane with a real node, so pods run for real unless they tolerate it.
KWOK_TAINT = {"key": "okvqa.dev/kwok", "value": "true", "effect": "NoSchedule"}
PAUSE_IMAGE = "localhost/okvqa-testenv/pause:3"
NAMESPACE = "k8s.io"  # containerd namespace the CRI plugin (and so the kubelet) uses
RUNC = "runc"
BINARIES = (
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "kubelet",
    "kube-proxy",
    "coredns",
    "pause",
    "cni-bin/bridge",
    "cni-bin/loopback",
    "cni-bin/host-local",
    "cni-bin/portmap",
)
HOST_TOOLS = (RUNC, "iptables", "ip", "mount", "umount")
FORWARD_GUARD = ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-m", "comment", "--comment", "okvqa-testenv"]


class NodeError(ControlPlaneError):
    """The real node cannot run here, or a part of it did not start."""


def node_cache_dir() -> Path:
    """containerd's persistent root (content + snapshots) and BuildKit's, beside the testenv binaries."""
    return testenv_dir().parent / "node"


def missing(directory: Path | None = None, need: tuple[str, ...] = BINARIES) -> list[str]:
    """Binaries (from `make testenv`) and host tools (Debian packages) the node needs and lacks."""
    base = directory or testenv_dir()
    gone = [name for name in need if not (base / name).is_file()]
    return gone + [tool for tool in HOST_TOOLS if shutil.which(tool) is None]


def check_can_run(directory: Path | None = None, need: tuple[str, ...] = BINARIES) -> None:
    """Fail in one line when this machine cannot run a node: not root, or something not installed."""
    if os.geteuid() != 0:
        raise NodeError(
            "a real node needs root (it creates a bridge, mounts, cgroups and iptables rules): "
            "run as root, or use the kwok-only cluster"
        )
    lacking = missing(directory, need)
    if lacking:
        raise NodeError(
            f"a real node needs {', '.join(lacking)}: run `make testenv` (binaries) and install "
            "Debian's runc, iptables and debootstrap (`make testenv-host`)"
        )


@contextlib.contextmanager
def node_lock() -> Iterator[None]:
    """The machine's one node slot: containerd's persistent root and the bridge are shared by every node."""
    cache = node_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "node.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeError(
                f"another real node (or image build) runs on this machine (lock {cache / 'node.lock'})"
            ) from None
        yield


def _run(*argv: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


# ------------------------------------------------------------------------------------------- network


class Network:
    """The bridge pods live on, its address, the route to Services and the rule that keeps pods in."""

    def __init__(self, service_cidr: str) -> None:
        self.service_cidr = service_cidr

    def create(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise NodeError(f"bridge {BRIDGE} already exists: another real node runs, or one was not stopped")
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Host → ClusterIP leaves from the bridge address, so pods can answer without any masquerade.
        _run("ip", "route", "add", self.service_cidr, "dev", BRIDGE, "src", NODE_IP)
        # Pod → ClusterIP → pod is forwarded on this bridge only; nothing a pod sends leaves it.
        host.write_sysctl(f"net/ipv4/conf/{BRIDGE}/forwarding", "1")
        _run("iptables", "-w", "-I", *FORWARD_GUARD, "-j", "DROP")

    @staticmethod
    def delete() -> None:
        while _run("iptables", "-w", "-D", *FORWARD_GUARD, "-j", "DROP", check=False).returncode == 0:
            pass
        bridge = Path(f"/sys/class/net/{BRIDGE}")
        if bridge.exists():
            # Pods' veths, which CNI DEL would have removed: a stopped pod's network namespace can outlive
            # its processes (orphaned TCP sockets pin it for minutes), and its veth with it. Deleting the
            # host end deletes the pair.
            for port in sorted(p.name for p in (bridge / "brif").iterdir()):
                _run("ip", "link", "delete", port, check=False)
            _run("ip", "link", "delete", BRIDGE, check=False)

    def cni_config(self, ipam_dir: Path) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "okvqa-testenv",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,  # true would switch net.ipv4.ip_forward on for the whole machine
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(ipam_dir),
                        "ranges": [[{"subnet": str(POD_CIDR), "gateway": NODE_IP}]],
                        "routes": [{"dst": self.service_cidr}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }


# ----------------------------------------------------------------------------------------- containerd


class Containerd:
    """containerd with the CRI plugin and runc; its root persists in the node cache, its state does not."""

    def __init__(self, binaries: Path, state: Path, cni_conf: Path, *, root: Path | None = None) -> None:
        self.binaries = binaries
        self.root = root or node_cache_dir() / "containerd"
        self.state = state
        self.cni_conf = cni_conf
        self.socket = state / "containerd.sock"
        self.component: Component | None = None

    def config(self) -> str:
        cni_bin = self.binaries / "cni-bin"
        runc = shutil.which(RUNC) or RUNC
        return f"""version = 3
root = "{self.root}"
state = "{self.state}"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "{self.socket}"
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "{self.state / "opt"}"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{PAUSE_IMAGE}"
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "{runc}"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["{cni_bin}"]
      conf_dir = "{self.cni_conf}"
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""

    def start(self, log: Path) -> Component:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        config = self.state / "config.toml"
        config.write_text(self.config())
        # The shim is found on PATH; ours sits beside containerd.
        env = {**os.environ, "PATH": f"{self.binaries}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.component = Component(
            "containerd", [str(self.binaries / "containerd"), "--config", str(config)], log, env, grace_s=10
        )
        self.component.start()
        wait_until("containerd's socket", self.ready, [self.component], self.component, timeout=60)
        return self.component

    def ready(self) -> bool:
        return self.socket.exists() and self.ctr("version", check=False).returncode == 0

    def ctr(
        self, *args: str, check: bool = True, stdin: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binaries / "ctr"), "--address", str(self.socket), "--namespace", NAMESPACE, *args]
        return _run(*argv, check=check, stdin=stdin)

    def images(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").stdout.split())

    def import_archive(self, archive: Path) -> None:
        """Import an OCI archive (its index names the image) and unpack it for the CRI snapshotter."""
        with archive.open("rb") as data:
            self.ctr("images", "import", "--no-unpack=false", "--snapshotter", "overlayfs", "-", stdin=data)

    def remove_stale_images(self) -> list[str]:
        """Delete the records of images no name points to any more (what a rebuild replaced).

        The CRI plugin keeps every image under its `sha256:` id as well as its name; when a rebuild moves
        the name, the old id stays and pins gigabytes of layers. Removing the record lets containerd's
        garbage collector free them. Returns the ids removed.
        """
        rows = [line.split() for line in self.ctr("images", "list").stdout.splitlines()[1:] if line.strip()]
        named = {digest for ref, _, digest, *_ in rows if not ref.startswith("sha256:")}
        stale = [ref for ref, _, digest, *_ in rows if ref.startswith("sha256:") and digest not in named]
        if stale:
            self.ctr("images", "remove", *stale)
        return stale

    def remove_containers(self) -> None:
        """Delete every task and container of the CRI namespace: the persistent root starts clean."""
        for container in self.ctr("containers", "list", "--quiet", check=False).stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", container, check=False)
            self.ctr("tasks", "delete", "--force", container, check=False)
            self.ctr("containers", "delete", container, check=False)
        for sandbox in self.ctr("sandboxes", "list", "--quiet", check=False).stdout.split():
            self.ctr("sandboxes", "remove", "--force", sandbox, check=False)


# ---------------------------------------------------------------------------------------- the node


class RealNode:
    """One real Node (kubelet + containerd) with kube-proxy and CoreDNS, registered to a control plane.

    The control plane creates it before its API server starts (the bridge must exist first, see
    `prepare`) and starts it once the API answers (`start`).
    """

    def __init__(self, binaries: Path, directory: Path, service_cidr: str) -> None:
        self.binaries = binaries
        self.dir = directory
        self.network = Network(service_cidr)
        self.before: host.HostState | None = None
        self.containerd: Containerd | None = None
        self.components: list[Component] = []
        self._lock = contextlib.ExitStack()
        self.proxy_config: Path | None = None  # kube-proxy's, for its --cleanup on stop

    # -- phase 1: before the API server

    def prepare(self) -> None:
        """Lock the machine's one node slot, record the host, create the bridge."""
        check_can_run(self.binaries)
        self._lock.enter_context(node_lock())
        self.before = host.HostState.capture()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.network.create()

    # -- phase 2: with the API server up

    def start(self, api: Api, ca: ClusterCa, server: str, spawn: Callable[..., Component]) -> None:
        """containerd, the pause image, kubelet, kube-proxy and CoreDNS; returns once the Node is Ready."""
        from okvqa_testenv import images
        from okvqa_testenv.controlplane import write_kubeconfig

        kubelet_port, kubelet_health, proxy_health, proxy_metrics, dns_health, dns_ready = free_ports(6)
        cni_conf = self.dir / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-okvqa.conflist").write_text(
            json.dumps(self.network.cni_config(self.dir / "ipam"), indent=2)
        )

        self.containerd = Containerd(self.binaries, self.dir / "containerd", cni_conf)
        containerd = self.containerd.start(self.dir / "logs" / "containerd.log")
        self.components.append(containerd)
        self.containerd.remove_containers()  # left by a node that was killed instead of stopped
        if PAUSE_IMAGE not in self.containerd.images():
            self.containerd.import_archive(images.pause_archive(self.binaries / "pause", PAUSE_IMAGE))

        # The kubelet: a client certificate in system:nodes (Node authorizer, NodeRestriction) and a
        # serving certificate for its address, both from the cluster's CA.
        client = ca.issue(
            "kubelet-client",
            f"system:node:{NODE_NAME}",
            organizations=("system:nodes",),
            usages=(CLIENT_AUTH,),
        )
        serving = ca.issue(
            "kubelet-serving", NODE_NAME, dns_names=(NODE_NAME,), ips=(NODE_IP,), usages=(SERVER_AUTH,)
        )
        kubelet_kubeconfig = self.dir / "kubelet.kubeconfig"
        write_kubeconfig(kubelet_kubeconfig, server, ca.cert_file, *client, user=f"system:node:{NODE_NAME}")
        kubelet_config = self.dir / "kubelet.yaml"
        kubelet_config.write_text(
            yaml.safe_dump(self._kubelet_config(ca, serving, kubelet_port, kubelet_health))
        )
        kubelet = spawn(
            "kubelet",
            [
                str(self.binaries / "kubelet"),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in NODE_LABELS.items()),
                "--v=1",
            ],
            grace_s=10,
        )
        self.components.append(kubelet)

        proxy_pair = ca.issue("kube-proxy", "system:kube-proxy", usages=(CLIENT_AUTH,))
        proxy_kubeconfig = self.dir / "kube-proxy.kubeconfig"
        write_kubeconfig(proxy_kubeconfig, server, ca.cert_file, *proxy_pair, user="system:kube-proxy")
        proxy_config = self.dir / "kube-proxy.yaml"
        proxy_config.write_text(
            yaml.safe_dump(self._proxy_config(proxy_kubeconfig, proxy_health, proxy_metrics))
        )
        self.proxy_config = proxy_config
        proxy = spawn("kube-proxy", [str(self.binaries / "kube-proxy"), f"--config={proxy_config}"])
        self.components.append(proxy)

        # CoreDNS reads Services and EndpointSlices as user system:coredns (a ClusterRole below).
        for path, obj in _coredns_rbac():
            api.create(path, obj)
        dns_pair = ca.issue("coredns", "system:coredns", usages=(CLIENT_AUTH,))
        dns_kubeconfig = self.dir / "coredns.kubeconfig"
        write_kubeconfig(dns_kubeconfig, server, ca.cert_file, *dns_pair, user="system:coredns")
        corefile = self.dir / "Corefile"
        corefile.write_text(_corefile(dns_kubeconfig, dns_health, dns_ready))
        dns = spawn("coredns", [str(self.binaries / "coredns"), "-conf", str(corefile)])
        self.components.append(dns)

        components = [containerd, kubelet, proxy, dns]
        wait_until("the real node to be Ready", lambda: self._ready(api), components, kubelet, timeout=120)
        wait_until(
            "kube-proxy /healthz",
            lambda: http_ok(f"http://127.0.0.1:{proxy_health}/healthz"),
            components,
            proxy,
        )
        wait_until("CoreDNS /ready", lambda: http_ok(f"http://127.0.0.1:{dns_ready}/ready"), components, dns)

    def _kubelet_config(
        self, ca: ClusterCa, serving: tuple[Path, Path], port: int, health_port: int
    ) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd.socket if self.containerd else ''}",
            "imageServiceEndpoint": f"unix://{self.containerd.socket if self.containerd else ''}",
            "address": NODE_IP,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": health_port,
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [NODE_IP],
            "resolvConf": "",
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            "makeIPTablesUtilChains": False,
            "protectKernelDefaults": False,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca.cert_file)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving[0]),
            "tlsPrivateKeyFile": str(serving[1]),
            "serializeImagePulls": False,
            # Images exist only locally: never collect them, and do not evict pods for a busy CI disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "registerNode": True,
            "staticPodPath": "",
        }

    def _proxy_config(self, kubeconfig: Path, health_port: int, metrics_port: int) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": str(POD_CIDR),
            "healthzBindAddress": f"127.0.0.1:{health_port}",
            "metricsBindAddress": f"127.0.0.1:{metrics_port}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # Zeros leave the machine's conntrack settings alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        }

    @staticmethod
    def _ready(api: Api) -> bool:
        return condition_true(api.get(f"/api/v1/nodes/{NODE_NAME}"), "Ready")

    # -- stop

    def stop(self) -> list[str]:
        """Stop everything and put the machine back; returns what could not be put back (empty: all)."""
        by_name = {c.name: c for c in self.components}
        if "kubelet" in by_name:
            by_name["kubelet"].stop()
        _kill_cgroups("kubepods")
        if self.containerd is not None and self.containerd.component is not None:
            self.containerd.remove_containers()
        _kill_shims(self.binaries / "containerd-shim-runc-v2")
        for name in ("coredns", "kube-proxy", "containerd"):
            if name in by_name:
                by_name[name].stop()
        if self.proxy_config is not None:
            _run(str(self.binaries / "kube-proxy"), f"--config={self.proxy_config}", "--cleanup", check=False)
        self.components.clear()
        _unmount_under(self.dir, Path("/run/containerd"), Path("/var/lib/kubelet"), node_cache_dir())
        self.network.delete()
        problems: list[str] = []
        if self.before is not None:
            self.before.restore()
            problems = self.before.diff(host.HostState.capture())
            self.before = None
        self._lock.close()
        return problems


def _coredns_rbac() -> list[tuple[str, dict[str, Any]]]:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "okvqa-testenv:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "okvqa-testenv:coredns"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
    }
    base = "/apis/rbac.authorization.k8s.io/v1"
    return [(f"{base}/clusterroles", role), (f"{base}/clusterrolebindings", binding)]


def _corefile(kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """Cluster names only: pods have no way off the machine, so there is nothing to forward to."""
    return f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} okvqa-testenv
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


def _kill_cgroups(name: str) -> None:
    """SIGKILL every process of the pods' cgroups (containers, their children), then wait for them."""
    for _ in range(50):
        pids = set()
        for group in host.cgroup_tree(name):
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _kill_shims(binary: Path) -> None:
    """containerd's shims leave containerd's process group (they outlive it by design): kill them by exe."""
    target = str(binary.resolve())
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/exe") == target:
                os.kill(pid, signal.SIGKILL)


def _unmount_under(*roots: Path) -> None:
    """Unmount everything mounted below `roots` (netns, overlay rootfs, volumes), deepest first."""
    prefixes = [str(r.resolve()) for r in roots if r.exists()] + [str(r) for r in roots]
    for point in reversed(host.mounts()):
        below = any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes)
        if below and _run("umount", point, check=False).returncode != 0:
            _run("umount", "-l", point, check=False)
