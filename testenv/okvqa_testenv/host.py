"""What a real node changes on the machine, captured before it starts and compared after it stops.

Why: a kubelet, containerd, CNI and kube-proxy write to places outside any directory we give them
(kernel tunables, iptables, fixed paths, cgroups, mounts). The node records this state first, puts back
what it can on stop, and `diff` names anything left over, so a test can assert the machine is as before.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Tunables the kubelet sets when protectKernelDefaults is false (its setupKernelTunables), the ones
# kube-proxy may set, and the forwarding switches that must stay off.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
# Paths the kubelet and containerd write whatever their configuration says.
FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/etc/cni",
    "/opt/cni",
)
IPTABLES_TABLES = ("filter", "nat", "mangle")
# Where the kubelet (cgroupfs driver) and BuildKit's RUN steps put their cgroups.
CGROUPS = ("kubepods", "buildkit")
IPTABLES_COMMANDS = ("iptables", "ip6tables")


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", name).write_text(value + "\n")


def iptables_rules() -> dict[str, list[str]]:
    """Chains and rules per `<command> -t <table>` (IPv4 and IPv6), without counters: what `-S` prints."""
    rules = {}
    for command in IPTABLES_COMMANDS:
        if shutil.which(command) is None:
            continue
        for table in IPTABLES_TABLES:
            result = subprocess.run([command, "-w", "-t", table, "-S"], capture_output=True, text=True)
            rules[f"{command} -t {table}"] = result.stdout.splitlines() if result.returncode == 0 else []
    return rules


def _ours(rule: str) -> bool:
    """A rule or chain of the kubelet, kube-proxy or the CNI plugins (never a rule of the machine's own)."""
    return any(word.startswith(("KUBE-", "CNI-")) for word in shlex.split(rule))


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def mounts() -> list[str]:
    """Mount points in the order they were mounted (/proc/self/mountinfo)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def cgroup_dirs(name: str) -> list[Path]:
    """Every `name` directory directly under a cgroup v1 hierarchy root (kubepods, buildkit...)."""
    root = Path("/sys/fs/cgroup")
    return [path / name for path in root.iterdir() if (path / name).is_dir()] if root.is_dir() else []


def cgroup_tree(name: str) -> list[Path]:
    """Every cgroup under each hierarchy's `name` directory, deepest first."""
    found: list[Path] = []
    for top in cgroup_dirs(name):
        found += [Path(dirpath) for dirpath, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


# What a node runs: its daemons (from `make testenv`) and each container's shim and runtime.
NODE_PROGRAMS = (
    "containerd",
    "containerd-shim-runc-v2",
    "kubelet",
    "kube-proxy",
    "coredns",
    "buildkitd",
    "runc",
    "pause",
)


def node_processes() -> list[str]:
    """`pid name` of every running process named like a node program (a leftover after a stop)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            # The executable's name: /proc/PID/comm cuts names at 15 characters.
            name = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            if name in NODE_PROGRAMS:
                found.append(f"{pid} {name}")
    return sorted(found)


@dataclass
class HostState:
    """The parts of the machine a node may change."""

    sysctls: dict[str, str | None] = field(default_factory=dict)
    iptables: dict[str, list[str]] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    mounts: list[str] = field(default_factory=list)
    paths: dict[str, bool] = field(default_factory=dict)
    cgroups: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            sysctls={name: read_sysctl(name) for name in SYSCTLS},
            iptables=iptables_rules(),
            links=links(),
            mounts=mounts(),
            paths={path: os.path.lexists(path) for path in FIXED_PATHS},
            cgroups=sorted(str(p) for name in CGROUPS for p in cgroup_dirs(name)),
            processes=node_processes(),
        )

    def restore(self) -> None:
        """Put back the tunables, drop the Kubernetes/CNI iptables rules and chains added since (the
        kubelet makes KUBE-FIREWALL whatever its configuration says, and kube-proxy's `--cleanup` leaves
        it), and remove the fixed paths and cgroups that did not exist before."""
        for name, value in self.sysctls.items():
            if value is not None and read_sysctl(name) != value:
                write_sysctl(name, value)
        for where, rules in iptables_rules().items():
            command = where.split()  # ["iptables", "-t", "nat"]
            added = [r for r in rules if r not in self.iptables.get(where, []) and _ours(r)]
            for rule in (r for r in added if r.startswith("-A ")):
                subprocess.run([*command, "-w", "-D", *shlex.split(rule)[1:]], capture_output=True)
            for chain in (r.split()[1] for r in added if r.startswith("-N ")):
                subprocess.run([*command, "-w", "-F", chain], capture_output=True)
                subprocess.run([*command, "-w", "-X", chain], capture_output=True)
        for path, existed in self.paths.items():
            if not existed and os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
        for name in CGROUPS:  # emptied by then: their processes were stopped
            for group in cgroup_tree(name):
                if not any(str(group).startswith(kept) for kept in self.cgroups):
                    with contextlib.suppress(OSError):
                        group.rmdir()

    def diff(self, after: HostState) -> list[str]:
        """What `after` has that this state had not (or lacks), one line each; empty when equal."""
        problems = [
            f"sysctl {name}: {value} → {after.sysctls.get(name)}"
            for name, value in self.sysctls.items()
            if after.sysctls.get(name) != value
        ]
        for where, rules in self.iptables.items():
            now = after.iptables.get(where, [])
            problems += [f"{where}: left {rule}" for rule in now if rule not in rules]
            problems += [f"{where}: lost {rule}" for rule in rules if rule not in now]
        problems += [f"network link left: {link}" for link in sorted(after.links - self.links)]
        problems += [f"mount left: {point}" for point in after.mounts if point not in self.mounts]
        problems += [
            f"path left: {path}"
            for path, existed in self.paths.items()
            if not existed and after.paths.get(path)
        ]
        problems += [f"cgroup left: {path}" for path in after.cgroups if path not in self.cgroups]
        problems += [f"process left: {p}" for p in after.processes if p not in self.processes]
        return problems
