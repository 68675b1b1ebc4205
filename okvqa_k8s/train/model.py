"""The LLaVA model under training: load, freeze, attach LoRA, split parameters into learning-rate groups.

What trains (the seed's recipe): LoRA adapters on every linear layer of the *language model* only, the
multi-modal projector in full (peft `modules_to_save`, so the adapter carries it), the vision tower frozen.
peft's own `all-linear` would also wrap the CLIP tower and the projector, hence the explicit regex.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import Any

from okvqa_k8s.spec import LoraSpec, TrainingSpec

log = logging.getLogger(__name__)

PROJECTOR = "multi_modal_projector"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPES[name])


def attention_implementation(requested: str) -> str:
    """flash-attention 2 only where the package is installed; otherwise PyTorch SDPA, with a warning."""
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        log.warning("flash_attn is not installed: using sdpa attention instead")
        return "sdpa"
    return requested


def load_model(path: str, *, dtype: str, attention: str) -> Any:
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(
        path, dtype=torch_dtype(dtype), attn_implementation=attention_implementation(attention)
    )


def load_processor(path: str) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


def lora_target_regex(model: Any, names: list[str]) -> str:
    """A peft `target_modules` regex matching the chosen linear layers inside the language model only."""
    import torch

    if names == ["all-linear"]:
        names = sorted(
            {
                full.rsplit(".", 1)[-1]
                for full, module in model.named_modules()
                if ".language_model." in f".{full}." and isinstance(module, torch.nn.Linear)
            }
        )
    if not names:
        raise ValueError("the language model has no linear layers to adapt")
    return rf".*\blanguage_model\..*\.({'|'.join(re.escape(n) for n in names)})$"


def apply_lora(model: Any, lora: LoraSpec, *, gradient_checkpointing: bool) -> Any:
    """Freeze the base, wrap the language model's linears with LoRA, train the projector fully."""
    from peft import LoraConfig, get_peft_model

    model.config.use_cache = False
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (the embeddings stay frozen).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_regex(model, list(lora.target_modules)),
        modules_to_save=[PROJECTOR],
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def parameter_groups(model: Any, training: TrainingSpec) -> list[dict[str, Any]]:
    """Two learning rates (LoRA: learning_rate, projector: mm_projector_lr); no decay on biases/norms."""
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_projector = PROJECTOR in name
        decays = param.ndim >= 2
        groups.setdefault((is_projector, decays), []).append(param)
    out = []
    for (is_projector, decays), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": training.mm_projector_lr if is_projector else training.learning_rate,
                "weight_decay": training.weight_decay if decays else 0.0,
                "name": ("projector" if is_projector else "lora") + ("" if decays else "_no_decay"),
            }
        )
    return out
