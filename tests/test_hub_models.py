"""A hub id as the base model (the spec's default) is downloaded by the built-in server as training does,
into HF_HOME on the pod's model volume, instead of being opened as a local path that does not exist."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from okvqa_k8s.kube.render import MODELS, Owner, render_server
from okvqa_k8s.spec import parse_spec

HUB_ID = "okvqa-test/tiny-llava"


def hub_cache(hf_home: Path, model_dir: Path, repo: str) -> Path:
    """`model_dir` laid out as huggingface_hub's cache holds a downloaded snapshot of `repo`."""
    commit = "0" * 40
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    return snapshot


def test_the_rendered_base_server_gets_a_hub_id_into_its_model_volume(
    tiny_model: Path, tmp_path: Path
) -> None:
    spec = parse_spec(
        {"dataset": {"uri": "s3://okvqa/d"}, "outputUri": "s3://okvqa/o", "model": {"name": HUB_ID}}
    )
    deployment, _ = render_server(spec, Owner("run", "ns"), "base")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    model = server["args"][server["args"].index("--model") + 1]
    hf_home = next(e["value"] for e in server["env"] if e["name"] == "HF_HOME")
    assert model == HUB_ID and hf_home.startswith(MODELS + "/")
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == MODELS)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume, "the hub download lands on the pod's writable model volume"

    local_home = tmp_path / hf_home.removeprefix("/")  # the pod path, mapped here
    snapshot = hub_cache(local_home, tiny_model, HUB_ID)
    # A fresh process, as in the pod: huggingface_hub reads HF_HOME when it is imported. Nothing is
    # downloaded in tests (HF_HUB_OFFLINE): the cache answers as the hub would.
    env = {**os.environ, "HF_HOME": str(local_home), "HF_HUB_OFFLINE": "1"}
    assert resolve(model, env) == (0, str(snapshot))
    code, out = resolve("okvqa-test/absent", env)
    assert code == 2 and out.startswith("model okvqa-test/absent: cannot get it from the Hugging Face hub (")
    assert "\n" not in out


def resolve(model: str, env: dict[str, str]) -> tuple[int, str]:
    """(exit code, the resolved directory or the one-line error) of the server's model resolution."""
    code = (
        "import sys\n"
        "from okvqa_k8s.errors import UserError\n"
        "from okvqa_k8s.serve.cli import _local_model\n"
        "try:\n"
        f"    print(_local_model({model!r}, None, '--model'))\n"
        "except UserError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout.strip()
