"""Model + LoRA + optimiser + schedule → a DeepSpeed engine; shared by the trainer and the benchmark.

The optimiser is ours (AdamW over the two learning-rate groups) unless the DeepSpeed JSON brings its own;
the schedule is HF's (`get_scheduler`), handed to DeepSpeed as a factory so it wraps whichever optimiser
DeepSpeed ends up stepping.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from okvqa_k8s.spec import FineTuneSpec
from okvqa_k8s.train.ds_config import fill_auto

# DeepSpeed's CPU accelerator JIT-compiles this op (a shared-memory allreduce) with the C++ compiler when
# the first process group starts. Only DeepSpeed's inference path (`inference_all_reduce`, AutoTP) calls it.
SHM_COMM_OP = "deepspeed_shm_comm"
log = logging.getLogger(__name__)


def skip_shm_comm_op() -> bool:
    """On the CPU accelerator, tell DeepSpeed its shm allreduce op is unavailable; returns whether it did.

    Why: training never calls the op (gradients are reduced by torch.distributed's gloo either way), yet
    DeepSpeed compiles it at every process start where its build cache is cold: 25-80 s on 2 cores in every
    fresh pod, and the first `okvqa-k8s demo` of a fresh clone (the cache is keyed by the venv's path).
    Where no `c++` exists, as in our runtime images, the compile would even crash the pod.
    """
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return False
    import deepspeed.ops

    # DeepSpeed probes compatibility once per process and keeps this dict; its own comment says edits persist.
    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
    return True


def init_distributed() -> None:
    """DeepSpeed's process group: NCCL on GPUs, gloo on CPUs (the trainer and the benchmark share this)."""
    import deepspeed
    import torch

    if skip_shm_comm_op():
        log.info("DeepSpeed's shm allreduce op is not built (inference uses it): gloo reduces gradients")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def make_engine(
    model: Any, spec: FineTuneSpec, raw_ds_config: dict[str, Any], *, world_size: int, total_steps: int
) -> tuple[Any, Any]:
    """(DeepSpeed engine, peft model) for `model`, trained as `spec` says."""
    import deepspeed
    import torch
    from transformers import get_scheduler

    from okvqa_k8s.train.model import apply_lora, parameter_groups

    t = spec.training
    hidden = model.config.text_config.hidden_size
    peft_model = apply_lora(model, spec.lora, gradient_checkpointing=t.gradient_checkpointing)
    groups = parameter_groups(peft_model, t)
    ds_config = fill_auto(
        raw_ds_config,
        micro_batch=t.per_device_batch_size,
        grad_accum=t.gradient_accumulation_steps,
        world_size=world_size,
        dtype=spec.model.dtype,
        hidden_size=hidden,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
    )
    warmup = math.ceil(t.warmup_ratio * total_steps)

    def scheduler(optimizer: Any) -> Any:
        return get_scheduler(
            t.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
        )

    own_optimizer = "optimizer" not in ds_config
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8) if own_optimizer else None
    engine, _, _, _ = deepspeed.initialize(
        model=peft_model,
        optimizer=optimizer,
        model_parameters=None if own_optimizer else groups,
        lr_scheduler=scheduler,
        config=ds_config,
        dist_init_required=False,
    )
    return engine, peft_model
