"""Images without a registry: OCI archives written here, the project's Dockerfiles built by BuildKit.

Why: the real node pulls nothing. Its sandbox (pause) image and the MinIO/mc images are written as OCI
archives from binaries `make testenv` built; a Debian bookworm base is made by debootstrap from Debian's
packages; BuildKit (containerd worker) builds images/*.Dockerfile on that base straight into the node's
containerd, under the same names the chart and examples use, so they run unchanged on the real node.

    python -m okvqa_testenv images build [NAME...]    # what `make testenv-images` runs
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from okvqa_testenv import host
from okvqa_testenv.paths import testenv_dir
from okvqa_testenv.processes import Component, ControlPlaneError, wait_until

DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_IMAGE = f"localhost/okvqa-testenv/base:{DEBIAN_SUITE}"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
PLATFORM = {"architecture": "amd64", "os": "linux"}
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(ControlPlaneError):
    """An image could not be made; the message names the step and its output."""


def images_dir() -> Path:
    """Cached archives (base root file system, pause, MinIO) beside the testenv binaries."""
    return testenv_dir().parent / "images"


def project_version(repo: Path) -> str:
    with (repo / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ OCI archives


def oci_archive(
    out: Path,
    ref: str,
    layers: Sequence[Path],
    image_config: dict[str, Any],
    created: str = "1970-01-01T00:00:00Z",
) -> Path:
    """Write an OCI image-layout tar naming `ref` (containerd's `io.containerd.image.name`) atomically.

    Layers are uncompressed tars: the archive is only imported on this machine, so compressing them
    would cost time for nothing.
    """
    diff_ids = [f"sha256:{_sha256_file(layer)}" for layer in layers]
    config = {
        **PLATFORM,
        "created": created,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": f"okvqa_testenv.images layer {i}"} for i in range(len(layers))
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": _digest(config_bytes), "size": len(config_bytes)},
        "layers": [
            {"mediaType": LAYER_TYPE, "digest": d, "size": layer.stat().st_size}
            for d, layer in zip(diff_ids, layers, strict=True)
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MANIFEST_TYPE,
                "digest": _digest(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": PLATFORM,
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add_bytes(tar, "index.json", json.dumps(index).encode())
            _add_bytes(tar, f"blobs/sha256/{_digest(manifest_bytes)[7:]}", manifest_bytes)
            _add_bytes(tar, f"blobs/sha256/{_digest(config_bytes)[7:]}", config_bytes)
            for digest, layer in zip(diff_ids, layers, strict=True):
                tar.add(layer, arcname=f"blobs/sha256/{digest[7:]}")
        os.replace(staging, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    return out


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def file_layer(out: Path, files: dict[str, Path]) -> Path:
    """A layer holding `files` (path in the image → file here), executable, owned by root."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        directories = sorted({str(Path(p).parent).lstrip("/") for p in files} - {""})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for target, source in sorted(files.items()):
            info = tar.gettarinfo(str(source), arcname=target.lstrip("/"))
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "", ""
            with source.open("rb") as f:
                tar.addfile(info, f)
    os.replace(staging, out)
    return out


def pause_archive(binary: Path, ref: str) -> Path:
    """The pod sandbox image: the static `pause` binary as its only file, run as nobody."""
    stamp = _sha256_file(binary)[:16]
    out = images_dir() / f"pause-{stamp}.tar"
    if not out.is_file():
        layer = file_layer(images_dir() / f"pause-{stamp}.layer.tar", {"/pause": binary})
        oci_archive(out, ref, [layer], {"Entrypoint": ["/pause"], "User": "65535:65535", "Env": [PATH_ENV]})
    return out


# ------------------------------------------------------------------------------------- base image


def debian_mirror() -> str:
    """$OKVQA_DEBIAN_MIRROR, else the first Debian mirror of this machine's apt sources."""
    override = os.environ.get("OKVQA_DEBIAN_MIRROR")
    if override:
        return override
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for source in sources:
        with contextlib.suppress(OSError):
            for line in source.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] and "security" not in words[1]:
                    return words[1]
                if words[:1] == ["deb"] and "security" not in line:
                    return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def extra_ca_certs() -> list[Path]:
    """The build machine's own CA certificates ($OKVQA_EXTRA_CA_CERTS, a directory, or the system's
    /usr/local/share/ca-certificates): pip inside the images needs them behind a TLS-inspecting proxy."""
    directory = Path(os.environ.get("OKVQA_EXTRA_CA_CERTS") or EXTRA_CA_DIR)
    return sorted(directory.glob("*.crt")) if directory.is_dir() else []


def base_layer() -> Path:
    """A Debian root file system with Python as one layer tar (cached by its inputs)."""
    certs = extra_ca_certs()
    key = hashlib.sha256(
        json.dumps([DEBIAN_SUITE, BASE_PACKAGES, debian_mirror()]).encode()
        + b"".join(c.read_bytes() for c in certs)
    ).hexdigest()[:16]
    out = images_dir() / f"base-{DEBIAN_SUITE}-{key}.layer.tar"
    if out.is_file():
        return out
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "the base image needs debootstrap: install Debian's debootstrap (`make testenv-host`)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="okvqa-rootfs-", dir=out.parent) as work:
        rootfs = Path(work) / "rootfs"
        _step(
            "debootstrap",
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                debian_mirror(),
            ],
        )
        if certs:
            target = rootfs / "usr/local/share/ca-certificates"
            target.mkdir(parents=True, exist_ok=True)
            for cert in certs:
                shutil.copy2(cert, target / cert.name)
            _step("update-ca-certificates", ["chroot", str(rootfs), "update-ca-certificates"])
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        staging = out.with_name(f".{out.name}.partial")
        # Device nodes are the runtime's to make; numeric owners because the image has its own users.
        _step(
            "pack the root file system",
            [
                "tar",
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(rootfs),
                "-cf",
                str(staging),
                ".",
            ],
        )
        os.replace(staging, out)
    return out


def base_archive() -> Path:
    layer = base_layer()
    out = layer.with_name(layer.name.replace(".layer.tar", ".tar"))
    if not out.is_file():
        oci_archive(out, BASE_IMAGE, [layer], {"Env": [PATH_ENV], "Cmd": ["/bin/bash"]})
    return out


def binary_on_base_archive(name: str, ref: str, binary: Path, image_config: dict[str, Any]) -> Path:
    """The base image plus one binary in /usr/local/bin (MinIO's server and client)."""
    base = base_layer()
    stamp = hashlib.sha256(f"{base.name}{_sha256_file(binary)}{ref}".encode()).hexdigest()[:16]
    out = images_dir() / f"{name}-{stamp}.tar"
    if not out.is_file():
        layer = file_layer(images_dir() / f"{name}-{stamp}.layer.tar", {f"/usr/local/bin/{name}": binary})
        oci_archive(out, ref, [base, layer], {"Env": [PATH_ENV], **image_config})
    return out


def _step(what: str, argv: list[str], **kwargs: Any) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise ImageError(f"{what} failed ({result.returncode}):\n{tail}")


# ------------------------------------------------------------------------------------ the images


@dataclass(frozen=True)
class DockerfileImage:
    """One of images/*.Dockerfile, built on the local base with its base-image build args."""

    name: str
    dockerfile: str
    build_args: dict[str, str] = field(default_factory=dict)
    default: bool = True  # built when no names are asked for

    def ref(self, version: str) -> str:
        # The names the chart and the examples use, so they run unchanged on the real node.
        return f"ghcr.io/okvqa-k8s/{self.name}:{version}"


# One torch image: the trainer's CPU variant also serves (engine: builtin) and evaluates.
DOCKERFILE_IMAGES = (
    DockerfileImage("operator", "operator.Dockerfile", {"PYTHON_IMAGE": BASE_IMAGE}),
    DockerfileImage(
        "trainer",
        "trainer.Dockerfile",
        {"BUILD_IMAGE": BASE_IMAGE, "RUNTIME_IMAGE": BASE_IMAGE, "ACCELERATOR": "cpu"},
    ),
    DockerfileImage("server", "server.Dockerfile", {"PYTHON_IMAGE": BASE_IMAGE}, default=False),
)
MINIO_IMAGE = "localhost/okvqa-testenv/minio:local"
MC_IMAGE = "localhost/okvqa-testenv/mc:local"


def default_refs(version: str) -> list[str]:
    """The images `build_images` makes by default: what the real-node tests and the local chart run."""
    return [BASE_IMAGE, MINIO_IMAGE, MC_IMAGE, *(i.ref(version) for i in DOCKERFILE_IMAGES if i.default)]


_STEP = re.compile(r"^#\d+ \[(\S+)\s+(\d+)/(\d+)\] (.*)$")


class BuildKit:
    """buildkitd with the containerd worker: what it builds lands in the node's containerd (k8s.io)."""

    def __init__(self, binaries: Path, containerd_socket: Path, state: Path, root: Path) -> None:
        self.binaries = binaries
        self.containerd_socket = containerd_socket
        self.state = state
        self.root = root
        self.socket = state / "buildkitd.sock"
        self.component: Component | None = None

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PATH": f"{self.binaries}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.component = Component(
            "buildkitd",
            [
                str(self.binaries / "buildkitd"),
                "--oci-worker=false",
                "--containerd-worker=true",
                f"--containerd-worker-addr={self.containerd_socket}",
                "--containerd-worker-namespace=k8s.io",
                "--containerd-worker-net=host",  # pip in RUN reaches PyPI; nothing else needs a network
                f"--root={self.root}",
                f"--addr=unix://{self.socket}",
            ],
            self.state / "buildkitd.log",
            env,
        )
        self.component.start()
        wait_until("buildkitd", self._ready, [self.component], self.component, timeout=60)

    def _ready(self) -> bool:
        return self.socket.exists() and self._buildctl("debug", "workers", check=False).returncode == 0

    def _buildctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binaries / "buildctl"), f"--addr=unix://{self.socket}", *args]
        result = subprocess.run(argv, capture_output=True, text=True)
        if check and result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-30:])
            raise ImageError(f"buildctl {args[0]} failed ({result.returncode}):\n{tail}")
        return result

    def build(
        self,
        repo: Path,
        image: DockerfileImage,
        ref: str,
        log: Path,
        secrets: dict[str, Path],
        echo: Callable[[str], None] = print,
    ) -> None:
        """Build images/<dockerfile> with the repository as context into containerd as `ref`.

        `cmdline` (any value) makes BuildKit's built-in Dockerfile frontend ignore the `# syntax=` line,
        which would otherwise have it pull the named frontend image from a registry.
        """
        argv = [
            "build",
            "--frontend=dockerfile.v0",
            f"--local=context={repo}",
            f"--local=dockerfile={repo / 'images'}",
            f"--opt=filename={image.dockerfile}",
            "--opt=cmdline=okvqa-testenv",
            "--opt=image-resolve-mode=local",
            f"--opt=build-arg:VERSION={project_version(repo)}",
            *(f"--opt=build-arg:{k}={v}" for k, v in image.build_args.items()),
            *(f"--secret=id={k},src={v}" for k, v in secrets.items()),
            # Uncompressed: the layers only ever go into this containerd; gzip would cost minutes for nothing.
            f"--output=type=image,name={ref},unpack=true,compression=uncompressed",
            "--progress=plain",
        ]
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(self.binaries / "buildctl"), f"--addr=unix://{self.socket}", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                # Progress: each Dockerfile step as BuildKit starts it ("#12 [build 6/12] RUN ...").
                if step := _STEP.match(line):
                    stage, index, count, what = step.groups()
                    elapsed = time.monotonic() - began
                    echo(f"[images] {image.name}: {stage} {index}/{count} {what[:70]} ({elapsed:.0f} s)")
            result = proc.wait()
        if result != 0:
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-30:])
            raise ImageError(f"building {ref} from images/{image.dockerfile} failed (log {log}):\n{tail}")

    def prune(self) -> None:
        """Drop the whole build cache; the images stay in containerd.

        Why not keep some: measured with BuildKit v0.34.2 here, `--keep-duration` and `--keep-storage`
        pruned nothing while the cache grew by the trainer's ~5 GB dependency layer per change of
        pyproject.toml and ~10 GB per build generation; only `--all` frees it. An unchanged image is
        skipped by its context digest instead (build_images), so only a real change rebuilds.
        """
        self._buildctl("prune", "--all", check=False)

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()
            self.component = None


def build_images(
    repo: Path, names: Sequence[str] = (), *, binaries: Path | None = None, echo: Any = print
) -> dict[str, float]:
    """Build (or confirm) every local image into the node's persistent containerd; returns seconds per image.

    Runs its own containerd (no kubelet) under the node lock, so it cannot race a running node.
    """
    from okvqa_testenv.node import Containerd, check_can_run, node_lock

    known = {"base", "pause", "minio", "mc", *(i.name for i in DOCKERFILE_IMAGES)}
    unknown = set(names) - known
    if unknown:
        raise ImageError(f"unknown image {', '.join(sorted(unknown))} (expected: {', '.join(sorted(known))})")
    wanted = set(names) or {"base", "pause", "minio", "mc", *(i.name for i in DOCKERFILE_IMAGES if i.default)}
    binaries = binaries or testenv_dir()
    check_can_run(binaries, need=("containerd", "containerd-shim-runc-v2", "ctr", "buildkitd", "buildctl"))
    version = project_version(repo)
    timings: dict[str, float] = {}
    with node_lock(), tempfile.TemporaryDirectory(prefix="okvqa-images-") as work:
        # BuildKit's RUN steps are containers too: their shims, cgroups and /run/containerd go afterwards.
        before = host.HostState.capture()
        state = Path(work)
        containerd = Containerd(binaries, state / "containerd", state / "net.d")
        containerd.start(state / "containerd.log")
        buildkit = BuildKit(
            binaries, containerd.socket, state / "buildkit", containerd.root.parent / "buildkit"
        )
        try:
            present = containerd.images()
            archives = {
                "base": (BASE_IMAGE, base_archive),
                "pause": (
                    "localhost/okvqa-testenv/pause:3",
                    lambda: pause_archive(binaries / "pause", "localhost/okvqa-testenv/pause:3"),
                ),
                "minio": (
                    MINIO_IMAGE,
                    lambda: binary_on_base_archive(
                        "minio", MINIO_IMAGE, binaries / "minio", {"Entrypoint": ["/usr/local/bin/minio"]}
                    ),
                ),
                "mc": (
                    MC_IMAGE,
                    lambda: binary_on_base_archive("mc", MC_IMAGE, binaries / "mc", {"Cmd": ["/bin/sh"]}),
                ),
            }
            for name, (ref, make) in archives.items():
                if name not in wanted and not (
                    name == "base" and wanted & {i.name for i in DOCKERFILE_IMAGES}
                ):
                    continue
                began = time.monotonic()
                if ref not in present:
                    echo(f"[images] {name}: writing and importing {ref}")
                    containerd.import_archive(make())
                timings[name] = time.monotonic() - began
                echo(f"[images] {name}: {ref} ready ({timings[name]:.1f} s)")
            todo = []
            for image in (i for i in DOCKERFILE_IMAGES if i.name in wanted):
                stamp = f"{image.ref(version)} {context_digest(repo, image)}"
                if image.ref(version) in present and _read(images_dir() / f"{image.name}.stamp") == stamp:
                    timings[image.name] = 0.0
                    echo(f"[images] {image.name}: {image.ref(version)} up to date (same Dockerfile, context)")
                else:
                    todo.append((image, stamp))
            if todo:
                buildkit.start()
                secrets = _ca_secret(state)
                for image, stamp in todo:
                    ref = image.ref(version)
                    began = time.monotonic()
                    echo(f"[images] {image.name}: building {ref} from images/{image.dockerfile} (BuildKit)")
                    buildkit.build(repo, image, ref, state / f"{image.name}.log", secrets, echo)
                    (images_dir() / f"{image.name}.stamp").write_text(stamp)
                    timings[image.name] = time.monotonic() - began
                    echo(f"[images] {image.name}: {ref} built in {timings[image.name]:.1f} s")
            # Old image records first: while one exists, the build cache it shares layers with is kept.
            stale = containerd.remove_stale_images()
            if stale:
                echo(f"[images] removed {len(stale)} image(s) that rebuilds replaced")
            if todo:
                buildkit.prune()
        finally:
            buildkit.stop()
            containerd.remove_containers()
            if containerd.component is not None:
                containerd.component.stop()
            before.restore()
            for problem in before.diff(host.HostState.capture()):
                echo(f"[images] warning: not put back: {problem}")
    return timings


def context_digest(repo: Path, image: DockerfileImage) -> str:
    """What a build of `image` reads: its Dockerfile, its build args and every file of the context that
    .dockerignore lets through (pyproject.toml, README.md, okvqa_k8s/, images/pip-install.sh)."""
    digest = hashlib.sha256((repo / "images" / image.dockerfile).read_bytes())
    digest.update(json.dumps(image.build_args, sort_keys=True).encode())
    allowed = [
        line.strip()[1:].rstrip("/")
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    ]
    for entry in allowed:
        root = repo / entry
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
                continue
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _ca_secret(state: Path) -> dict[str, Path]:
    """The build machine's extra CA certificates as the `extra-ca` build secret (see pip-install.sh)."""
    certs = extra_ca_certs()
    if not certs:
        return {}
    bundle = state / "extra-ca.pem"
    bundle.write_bytes(b"".join(c.read_bytes().rstrip() + b"\n" for c in certs))
    return {"extra-ca": bundle}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m okvqa_testenv images",
        description="Build the real node's images offline into its containerd: the Debian base "
        "(debootstrap), pause, MinIO and mc from `make testenv` binaries, and images/*.Dockerfile "
        "with BuildKit.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build what is missing (BuildKit's cache makes a rebuild fast)")
    build.add_argument("names", nargs="*", help="base, pause, minio, mc, operator, trainer (default: all)")
    build.add_argument("--repo", type=Path, default=Path.cwd(), help="the okvqa-k8s checkout (default: .)")
    args = parser.parse_args(argv)
    try:
        timings = build_images(args.repo.resolve(), args.names)
    except ControlPlaneError as exc:
        print(f"okvqa-testenv images: error: {exc}", file=sys.stderr)
        return 2
    print("[images] done: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return 0
