"""The real node's pure parts, without root: its configurations, the host-state check, the OCI writer;
and (`realnode`, root) the network's teardown on a bridge of its own.

What the node does for real (pods, DNS, Services, the chart, a FineTune) is in tests/test_realnode.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from okvqa_k8s.cli import main
from okvqa_testenv import host, images, node
from okvqa_testenv.pki import ClusterCa
from tests.conftest import require


def test_without_root_the_node_refuses_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    with pytest.raises(node.NodeError) as refused:
        node.check_can_run()
    assert str(refused.value).startswith("a real node needs root")
    assert "\n" not in str(refused.value)


def test_dev_cluster_up_real_node_without_root_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    monkeypatch.setattr("okvqa_testenv.missing_binaries", lambda **_: [])
    assert main(["dev", "cluster", "up", "--real-node"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("okvqa-k8s: error: a real node needs root") and len(err.splitlines()) == 1


def test_missing_names_binaries_and_host_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cni-bin").mkdir()
    for name in node.BINARIES:
        (tmp_path / name).write_text("")
    assert node.missing(tmp_path) == [] or set(node.missing(tmp_path)) <= set(node.HOST_TOOLS)
    (tmp_path / "cni-bin" / "portmap").unlink()
    monkeypatch.setattr(node.shutil, "which", lambda tool: None if tool == "runc" else f"/usr/bin/{tool}")
    assert node.missing(tmp_path) == ["cni-bin/portmap", "runc"]


def test_pods_get_a_route_to_services_only_and_no_gateway_or_masquerade() -> None:
    config = node.Network("10.96.0.0/16").cni_config(Path("/tmp/ipam"))
    bridge, portmap = config["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == node.BRIDGE
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False
    assert bridge["ipam"]["routes"] == [{"dst": "10.96.0.0/16"}]  # no default route: nothing off the machine
    assert bridge["ipam"]["ranges"] == [[{"subnet": str(node.POD_CIDR), "gateway": node.NODE_IP}]]
    assert portmap["type"] == "portmap"


def test_containerd_config_has_what_this_machine_needs(tmp_path: Path) -> None:
    containerd = node.Containerd(
        tmp_path / "bin", tmp_path / "state", tmp_path / "net.d", root=tmp_path / "root"
    )
    config = tomllib.loads(containerd.config())
    assert config["version"] == 3
    assert config["root"] == str(tmp_path / "root") and config["state"] == str(tmp_path / "state")
    plugins = config["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True  # root lacks CAP_SYS_RESOURCE on these machines
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2" and runc["options"]["SystemdCgroup"] is False
    assert runtime["cni"]["bin_dirs"] == [str(tmp_path / "bin" / "cni-bin")]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == node.PAUSE_IMAGE


def test_kubelet_and_kube_proxy_configurations(tmp_path: Path) -> None:
    real = node.RealNode(tmp_path / "bin", tmp_path / "node", "10.96.0.0/16")
    real.containerd = node.Containerd(tmp_path / "bin", tmp_path / "state", tmp_path / "net.d")
    ca = ClusterCa.create(tmp_path)
    kubelet = real._kubelet_config(ca, (tmp_path / "k.crt", tmp_path / "k.key"), 10250, 10248)
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["makeIPTablesUtilChains"] is False and kubelet["protectKernelDefaults"] is False
    assert kubelet["resolvConf"] == "" and kubelet["clusterDNS"] == [node.NODE_IP]
    assert kubelet["address"] == node.NODE_IP and kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["imageGCHighThresholdPercent"] == 100  # local images cannot be pulled again
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{tmp_path / 'state' / 'containerd.sock'}"
    proxy = real._proxy_config(tmp_path / "kubeconfig", 1, 2)
    assert proxy["mode"] == "iptables" and proxy["iptables"]["localhostNodePorts"] is False
    assert proxy["conntrack"]["maxPerCore"] == 0  # leaves the machine's conntrack table size alone


def test_host_state_diff_names_every_leftover() -> None:
    before = host.HostState(
        sysctls={"kernel/panic": "0"},
        iptables={"iptables -t filter": ["-P FORWARD ACCEPT"]},
        links={"lo", "eth0"},
        mounts=["/", "/proc"],
        paths={"/var/lib/kubelet": False, "/etc/cni": True},
        cgroups=[],
    )
    assert before.diff(before) == []
    after = host.HostState(
        sysctls={"kernel/panic": "10"},
        iptables={"iptables -t filter": ["-P FORWARD ACCEPT", "-N KUBE-FORWARD"]},
        links={"lo", "eth0", "okvqa0"},
        mounts=["/", "/proc", "/run/containerd/x"],
        paths={"/var/lib/kubelet": True, "/etc/cni": True},
        cgroups=["/sys/fs/cgroup/memory/kubepods"],
        processes=["4242 containerd-shim-runc-v2"],
    )
    assert before.diff(after) == [
        "sysctl kernel/panic: 0 → 10",
        "iptables -t filter: left -N KUBE-FORWARD",
        "network link left: okvqa0",
        "mount left: /run/containerd/x",
        "path left: /var/lib/kubelet",
        "cgroup left: /sys/fs/cgroup/memory/kubepods",
        "process left: 4242 containerd-shim-runc-v2",
    ]


def test_oci_archive_is_a_valid_image_layout(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    layer = images.file_layer(tmp_path / "layer.tar", {"/pause": binary})
    archive = images.oci_archive(
        tmp_path / "pause.tar", "localhost/x/pause:3", [layer], {"Entrypoint": ["/pause"]}
    )
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/x/pause:3"

    def blob(descriptor: dict) -> bytes:
        data = files[f"blobs/sha256/{descriptor['digest'][7:]}"]
        assert (
            hashlib.sha256(data).hexdigest() == descriptor["digest"][7:] and len(data) == descriptor["size"]
        )
        return data

    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    (layer_descriptor,) = manifest["layers"]
    layer_bytes = blob(layer_descriptor)
    assert config["rootfs"]["diff_ids"] == [layer_descriptor["digest"]]  # uncompressed: digest = diff_id
    assert config["config"]["Entrypoint"] == ["/pause"] and config["os"] == "linux"
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as inner:
        member = inner.getmember("pause")
        assert member.mode == 0o755 and member.uid == 0
        assert inner.extractfile(member).read() == binary.read_bytes()  # type: ignore[union-attr]


def test_debian_mirror_comes_from_the_environment_or_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKVQA_DEBIAN_MIRROR", "http://mirror.example/debian")
    assert images.debian_mirror() == "http://mirror.example/debian"
    monkeypatch.delenv("OKVQA_DEBIAN_MIRROR")
    assert "://" in images.debian_mirror()


def test_unknown_image_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match="unknown image nope"):
        images.build_images(tmp_path, ["nope"])


def test_the_images_command_refuses_bad_input_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from okvqa_testenv.__main__ import main as testenv_main

    assert testenv_main(["images", "build", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "okvqa-testenv images: error: unknown image nope "
        "(expected: base, mc, minio, operator, pause, server, trainer)"
    )
    assert testenv_main(["nodes"]) == 2 and "unknown command 'nodes'" in capsys.readouterr().err
    assert testenv_main(["--help"]) == 0 and "python -m okvqa_testenv images" in capsys.readouterr().out


def test_build_progress_names_each_dockerfile_step() -> None:
    step = images._STEP.match("#13 [build  7/12] RUN --mount=type=secret,id=extra-ca okvqa-pip-install\n")
    assert step is not None and step.groups()[:3] == ("build", "7", "12")
    assert images._STEP.match("#13 DONE 139.0s") is None


def test_an_image_is_rebuilt_exactly_when_its_context_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "images").mkdir(parents=True)
    (repo / "okvqa_k8s" / "__pycache__").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / ".dockerignore").write_text("*\n!pyproject.toml\n!okvqa_k8s/\n")
    (repo / "images" / "operator.Dockerfile").write_text("FROM x\n")
    (repo / "pyproject.toml").write_text("[project]\n")
    (repo / "okvqa_k8s" / "cli.py").write_text("print(1)\n")
    image = images.DockerfileImage("operator", "operator.Dockerfile", {"PYTHON_IMAGE": "base"})
    first = images.context_digest(repo, image)

    (repo / "tests" / "test_x.py").write_text("outside the context")
    (repo / "okvqa_k8s" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"compiled")
    assert images.context_digest(repo, image) == first
    (repo / "okvqa_k8s" / "cli.py").write_text("print(2)\n")
    assert images.context_digest(repo, image) != first
    other_args = images.DockerfileImage("operator", "operator.Dockerfile", {"PYTHON_IMAGE": "other"})
    assert images.context_digest(repo, other_args) != images.context_digest(repo, image)


@pytest.mark.realnode
def test_deleting_the_network_removes_the_pods_veths(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped pod's network namespace can outlive its processes (orphaned sockets pin it), and its
    veth with it: removing the bridge removes the veths plugged into it (on a bridge of this test's own)."""
    require(os.geteuid() == 0, "needs root: creates a bridge and a veth pair")
    bridge, veth, peer = (f"okvt{os.getpid() % 10000}{suffix}" for suffix in ("", "a", "b"))
    monkeypatch.setattr(node, "BRIDGE", bridge)
    monkeypatch.setattr(
        node, "FORWARD_GUARD", ["FORWARD", "-i", bridge, "-m", "comment", "--comment", bridge]
    )
    links = Path("/sys/class/net")
    try:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer], check=True)
        subprocess.run(["ip", "link", "set", veth, "master", bridge], check=True)
        assert (links / bridge / "brif" / veth).exists()
        node.Network.delete()
        assert not (links / bridge).exists() and not (links / veth).exists() and not (links / peer).exists()
    finally:
        for name in (veth, bridge):
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
