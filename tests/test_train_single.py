"""One training process end to end (DeepSpeed ZeRO-2 on CPU): learns, writes every output, merges exactly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from okvqa_k8s.errors import UserError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_spec(model: Path, dataset: str, output: str, **training: object) -> dict:
    """A spec for the toy model; small LoRA and high learning rates, as the demo uses."""
    return {
        "model": {"name": str(model), "dtype": "fp32"},
        "dataset": {"uri": dataset},
        "outputUri": output,
        "lora": {"r": 16, "alpha": 32},
        "nodes": 1,
        "nprocPerNode": 1,
        "training": {
            "learningRate": 2e-3,
            "mmProjectorLr": 2e-3,
            "perDeviceBatchSize": 4,
            "maxSteps": 12,
            "saveSteps": 6,
            "warmupRatio": 0.0,
            "deepspeed": "zero2",
            "dataloaderWorkers": 0,
            "maxLength": 128,
            **training,
        },
    }


def single_rank_env() -> dict[str, str]:
    """The variables torchrun would set for a world of one."""
    return {
        "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
    }  # fmt: skip


@pytest.fixture
def single_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in single_rank_env().items():
        monkeypatch.setenv(key, value)


def run_cli(args: list[str]) -> None:
    from okvqa_k8s.train.cli import train_command

    train_command.main(args, standalone_mode=False)


@pytest.fixture(scope="module")
def trained(tiny_model: Path, prepared_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 12-step run (output directory), shared by the tests that inspect its outputs."""
    root = tmp_path_factory.mktemp("run")
    out = root / "out"
    spec_file = root / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(tiny_model, str(prepared_dataset), str(out))))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in single_rank_env().items():
            mp.setenv(key, value)
        run_cli(["--spec", str(spec_file), "--scratch", str(root / "scratch")])
    return out


def test_single_process_learns_and_writes_every_output(trained: Path) -> None:
    out = trained
    assert (out / "_COMPLETE").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["log_history"]
    assert [r["step"] for r in history] == list(range(1, 13))
    first, last = history[0]["loss"], sum(r["loss"] for r in history[-3:]) / 3
    assert last < first * 0.8, f"loss did not fall: {first} -> {last}"
    assert history[0]["mm_projector_lr"] > 0 and history[0]["learning_rate"] > 0
    progress = json.loads((out / "progress.json").read_text())
    assert progress["step"] == progress["total_steps"] == 12 and progress["samples_per_second"] > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-12", "checkpoint-6"]
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 16 and adapter_cfg["modules_to_save"] == ["multi_modal_projector"]
    assert not (out / "merged" / "adapter_config.json").exists()


def _logits(model_dir_or_model: object, dataset: Path, processor_dir: Path):
    import torch
    from transformers import AutoProcessor

    from okvqa_k8s.train.data import SupervisedDataset, load_records

    processor = AutoProcessor.from_pretrained(processor_dir)
    sample = SupervisedDataset(dataset, load_records(dataset / "val.json"), processor, 128)[0]
    with torch.no_grad():
        return model_dir_or_model(
            input_ids=sample["input_ids"][None], pixel_values=sample["pixel_values"][None]
        ).logits


def test_merged_model_is_plain_llava_with_the_peft_models_logits(
    trained: Path, tiny_model: Path, prepared_dataset: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    # The merged checkpoint is a plain LLaVA: same keys as the base, nothing missing or left over.
    merged, info = LlavaForConditionalGeneration.from_pretrained(trained / "merged", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    base = LlavaForConditionalGeneration.from_pretrained(tiny_model)
    projector = "model.multi_modal_projector.linear_1.weight"
    assert not torch.equal(merged.state_dict()[projector], base.state_dict()[projector]), (
        "projector not trained"
    )
    vision = next(
        k for k in base.state_dict() if "vision_tower" in k and k.endswith("layers.0.mlp.fc1.weight")
    )
    assert torch.equal(merged.state_dict()[vision], base.state_dict()[vision]), (
        "vision tower must stay frozen"
    )

    peft_model = PeftModel.from_pretrained(base, trained / "adapter").eval()
    want = _logits(peft_model, prepared_dataset, trained / "merged")
    got = _logits(merged.eval(), prepared_dataset, trained / "merged")
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert want.abs().max() > 1.0  # not a degenerate all-zero output


def test_merge_command_rebuilds_the_same_model(trained: Path, tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from okvqa_k8s.train.cli import merge_command

    again = tmp_path / "merged"
    merge_command.main(
        [
            "--base",
            str(tiny_model),
            "--adapter",
            str(trained / "adapter"),
            "--out",
            str(again),
            "--dtype",
            "fp32",
        ],
        standalone_mode=False,
    )
    want = load_file(trained / "merged" / "model.safetensors")
    got = load_file(again / "model.safetensors")
    assert want.keys() == got.keys() and all((want[k] == got[k]).all() for k in want)
    assert (again / "tokenizer.json").is_file() and (again / "chat_template.jinja").is_file()


def test_a_finished_run_is_not_trained_again(
    tiny_model: Path, prepared_dataset: Path, tmp_path: Path, single_rank: None
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "_COMPLETE").write_text("{}")
    (out / "metrics.json").write_text(json.dumps({"global_step": 99}))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(tiny_model, str(prepared_dataset), str(out))))
    run_cli(["--spec", str(spec_file), "--scratch", str(tmp_path / "scratch")])
    assert not list((tmp_path / "scratch").glob("okvqa-*")), "a finished run must not stage anything"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": 0}, "nodes"),
        ({"training": {"deepspeed": "zero4"}}, "deepspeed"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"dataset": {"uri": "/nonexistent/dataset"}}, "dataset.uri"),
        ({"model": {"name": "/nonexistent/model", "dtype": "fp32"}}, "model.name"),
    ],
)
def test_bad_specs_fail_before_any_process_group(
    tiny_model: Path, prepared_dataset: Path, tmp_path: Path, change: dict, message: str
) -> None:
    import torch.distributed as dist

    doc = tiny_spec(tiny_model, str(prepared_dataset), str(tmp_path / "out"))
    for key, value in change.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=message):
        run_cli(["--spec", str(spec_file), "--scratch", str(tmp_path / "scratch")])
    assert not dist.is_initialized()
    assert not (tmp_path / "out").exists() and not (tmp_path / "scratch").exists()


def test_unknown_deepspeed_flag_fails_before_any_process_group(
    tiny_model: Path, prepared_dataset: Path, tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(tiny_model, str(prepared_dataset), str(tmp_path / "out"))))
    with pytest.raises(UserError, match="--deepspeed"):
        run_cli(["--spec", str(spec_file), "--deepspeed", "zero9"])


@pytest.mark.parametrize("compiler", [False, True], ids=["no-compiler", "compiler"])
def test_cpu_training_never_builds_deepspeeds_shm_op(
    tiny_model: Path, prepared_dataset: Path, tmp_path: Path, compiler: bool
) -> None:
    """DeepSpeed's CPU accelerator JIT-compiles its shm allreduce op at the first process group, though only
    its inference path calls it. Without a compiler (the runtime image) the pod would die ("c++: not
    found"); with one, every cold start would spend 25-80 s compiling it (measured: 44 s, 2 cores).
    """
    spec_file = tmp_path / "spec.yaml"
    doc = tiny_spec(tiny_model, str(prepared_dataset), str(tmp_path / "out"), maxSteps=2, saveSteps=2)
    spec_file.write_text(yaml.safe_dump(doc))
    bin_dir = Path(sys.executable).parent  # python and the console scripts, no compiler
    assert shutil.which("c++", path=str(bin_dir)) is None
    cxx = shutil.which("c++")
    if compiler:
        assert cxx is not None, "this case needs a C++ compiler on PATH"
    env = {
        **os.environ,
        **single_rank_env(),
        "PATH": os.environ["PATH"] if compiler else str(bin_dir),
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions"),  # nothing built earlier can be reused
        "OKVQA_PROGRESS": "0",
    }
    env.pop("CXX", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "okvqa_k8s.cli",
            "train",
            "--spec",
            str(spec_file),
            "--scratch",
            str(tmp_path / "s"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shm allreduce op is not built" in result.stderr
    assert (tmp_path / "out" / "_COMPLETE").is_file()
    assert not (tmp_path / "extensions" / "deepspeed_shm_comm").exists()
