"""Adapter → merged full model, the format vLLM and the built-in server load.

The merge always starts again from the *original* base weights on one process, never from the DeepSpeed
engine's (possibly ZeRO-3 partitioned) modules: the result is a plain `LlavaForConditionalGeneration`
whose keys are exactly the base checkpoint's (no `base_model.model.` prefixes, no `lora_` tensors, no
`adapter_config.json` that would make loaders treat the directory as a peft adapter) and whose projector
is the trained one (peft swaps `modules_to_save` copies back in on `merge_and_unload`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import atomic_directory
from okvqa_k8s.train.model import load_model, load_processor


def save_adapter(peft_model: Any, state_dict: dict[str, Any], out_dir: Path, *, base_name: str) -> Path:
    """peft-format adapter (LoRA + projector) from a gathered state dict; names the base it belongs to."""
    config = peft_model.peft_config["default"]
    config.base_model_name_or_path = base_name
    with atomic_directory(out_dir, replace=True) as tmp:
        peft_model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    return out_dir


def merge_adapter(base_path: str, adapter_dir: str | Path, out_dir: str | Path, *, dtype: str) -> Path:
    """Load the base, apply the adapter, fold LoRA into the weights and save model + processor."""
    from peft import PeftModel

    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter}: not a peft adapter (adapter_config.json missing)")
    base = load_model(base_path, dtype=dtype, attention="sdpa")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.config.use_cache = True
    processor = load_processor(base_path)
    with atomic_directory(out_dir, replace=True) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return Path(out_dir)
