"""DeepSpeed configs: the shipped ZeRO-2/ZeRO-3 files or a user's JSON, with `auto` values filled in.

`auto` is the HF Trainer convention: the config says *which* features to use, the run's arguments say the
sizes. Filling it here (not in DeepSpeed) keeps one source of truth for batch sizes: the spec. Anything
still `auto` afterwards is a key this filler does not know, and is refused before any process starts.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError

SHIPPED = ("zero2", "zero3")


def load_ds_config(choice: str) -> dict[str, Any]:
    """`zero2` / `zero3` (shipped) or a path to a DeepSpeed JSON file."""
    if choice in SHIPPED:
        text = resources.files("okvqa_k8s.train").joinpath("configs", f"{choice}.json").read_text("utf-8")
        return json.loads(text)
    path = Path(choice)
    if not path.is_file():
        raise UserError(f"--deepspeed {choice!r}: expected zero2, zero3 or the path of a DeepSpeed JSON file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UserError(f"{path}: zero_optimization.stage: expected 0, 1, 2 or 3, got {stage!r}")
    return config


def zero_stage(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def fill_auto(
    config: dict[str, Any],
    *,
    micro_batch: int,
    grad_accum: int,
    world_size: int,
    dtype: str,
    hidden_size: int,
    learning_rate: float,
    weight_decay: float,
    gradient_clipping: float = 1.0,
    source: str = "deepspeed config",
) -> dict[str, Any]:
    """A copy of `config` with every `auto` replaced (HF Trainer's rules for the bucket sizes)."""
    values = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": gradient_clipping,
        "bf16.enabled": dtype == "bf16",
        "fp16.enabled": dtype == "fp16",
        "zero_optimization.reduce_bucket_size": hidden_size * hidden_size,
        "zero_optimization.allgather_bucket_size": hidden_size * hidden_size,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden_size,
        "optimizer.params.lr": learning_rate,
        "optimizer.params.weight_decay": weight_decay,
    }
    unknown: list[str] = []

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
        if node == "auto":
            if path not in values:
                unknown.append(path)
            return values.get(path, node)
        return node

    filled = walk(config, "")
    if unknown:
        raise UserError(f"{source}: cannot fill 'auto' for {', '.join(unknown)}; set explicit values")
    expected = micro_batch * grad_accum * world_size
    for key, want in (
        ("train_micro_batch_size_per_gpu", micro_batch),
        ("gradient_accumulation_steps", grad_accum),
        ("train_batch_size", expected),
    ):
        if key in filled and filled[key] != want:
            raise UserError(f"{source}: {key} is {filled[key]} but the spec implies {want}; use 'auto'")
    return filled
