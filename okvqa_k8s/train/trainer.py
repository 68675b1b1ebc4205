"""The in-pod training run: preflight, rendezvous, stage inputs, train with DeepSpeed, checkpoint, finish.

A custom loop over the DeepSpeed engine instead of the HF Trainer: the Trainer's CPU/gloo path sees a
world of one on every rank (docs/architecture.md, traps), and the two things this product needs to get
exactly right — which samples a rank sees at which step, and which files a node owns in a checkpoint —
are simplest to prove when this module decides them itself. The recipe is still the HF/LLaVA one: AdamW,
cosine schedule with warmup ratio, gradient clipping 1.0, ZeRO from a JSON config with `auto` values.

Order matters: everything a user can get wrong is checked before a process group exists, so a bad spec
fails in seconds with one line instead of timing out a rendezvous on other nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from okvqa_k8s import layout
from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import atomic_write_json
from okvqa_k8s.hub import hub_snapshot, is_hub_id, is_local_path
from okvqa_k8s.progress import bar
from okvqa_k8s.spec import FineTuneSpec
from okvqa_k8s.train import checkpoints as ckpt
from okvqa_k8s.train.data import (
    Collator,
    SupervisedDataset,
    global_batches_per_epoch,
    load_records,
    rank_batches,
)
from okvqa_k8s.train.ds_config import load_ds_config, zero_stage
from okvqa_k8s.train.env import DistEnv, dist_env, single_process_rendezvous
from okvqa_k8s.train.reporting import ProgressFile, check_report_to, make_logger

log = logging.getLogger("okvqa_k8s.train")


@dataclass
class RunOptions:
    """Per-invocation settings that are not part of the spec (where this node keeps its files)."""

    deepspeed: str
    scratch: Path


@dataclass
class TrainerState:
    """What a checkpoint adds to DeepSpeed's own files: enough to continue the loss curve and data order."""

    global_step: int = 0
    total_steps: int = 0
    world_size: int = 1
    log_history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> TrainerState:
        return cls(**json.loads(path.read_text()))


def dataset_kind(uri: str, split: str) -> str:
    """`prepared` (a local dataset dir, used in place) or `staged` (shards + manifest, fetched per node)."""
    from okvqa_k8s.storage import MANIFEST_NAME, exists, join
    from okvqa_k8s.storage.uri import parse

    if parse(uri).scheme == "file" and (Path(parse(uri).path) / f"{split}.json").is_file():
        return "prepared"
    if exists(join(uri, MANIFEST_NAME)):
        return "staged"
    raise UserError(
        f"dataset.uri {uri}: no {split}.json (prepared dataset) and no staged manifest found; "
        "run `okvqa-k8s data prepare` and, for S3, `okvqa-k8s data stage`"
    )


def check_model_source(name: str) -> None:
    from okvqa_k8s.storage import exists, join

    if name.startswith("s3://"):
        if not exists(join(name, "config.json")):
            raise UserError(f"model.name {name}: no config.json there (stage the HF checkpoint first)")
    elif (
        is_local_path(name)
        and not (Path(name.removeprefix("file://")).expanduser() / "config.json").is_file()
    ):
        raise UserError(f"model.name {name}: not a HF checkpoint directory (config.json missing)")


def preflight(spec: FineTuneSpec, options: RunOptions, environ: dict[str, str]) -> tuple[DistEnv, dict]:
    """Every check that needs no process group; raises UserError with the field at fault."""
    env = dist_env(environ)
    ds_config = load_ds_config(options.deepspeed)
    check_report_to(spec.training.report_to)
    dataset_kind(spec.dataset.uri, spec.dataset.train_split)
    check_model_source(spec.model.name)
    try:
        options.scratch.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"scratch directory {options.scratch}: {exc.strerror}; set OKVQA_SCRATCH or --scratch"
        ) from None
    if env.launched and env.world_size != spec.world_size:
        log.warning(
            "spec says nodes x nprocPerNode = %d processes, torchrun started %d; training with %d",
            spec.world_size,
            env.world_size,
            env.world_size,
        )
    return env, ds_config


def run_dir(scratch: Path, output_uri: str) -> Path:
    """One directory per run on the node's scratch disk, so two runs on one node never share files."""
    return scratch / f"okvqa-{hashlib.sha256(output_uri.encode()).hexdigest()[:12]}"


def train(spec: FineTuneSpec, options: RunOptions, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or resume, or recognise as finished) the training of `spec`; returns the final metrics."""
    from okvqa_k8s.storage import exists, join, read_json

    environ = os.environ if environ is None else environ
    env, ds_config = preflight(spec, options, dict(environ))
    if exists(join(spec.output_uri, layout.COMPLETE)):
        log.info("%s is already complete: nothing to train", spec.output_uri)
        return read_json(join(spec.output_uri, layout.METRICS))
    if not env.launched:
        single_process_rendezvous(environ)  # type: ignore[arg-type]

    import torch.distributed as dist

    from okvqa_k8s.train.engine import init_distributed

    init_distributed()
    try:
        return _Run(spec, options, env, ds_config).execute()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    def __init__(self, spec: FineTuneSpec, options: RunOptions, env: DistEnv, ds_config: dict) -> None:
        import torch

        self.spec = spec
        self.env = env
        self.t = spec.training
        self.dir = run_dir(options.scratch, spec.output_uri)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_root = self.dir / "checkpoints"
        self.ckpt_uri = layout.checkpoints_uri(spec)
        self.raw_ds_config = ds_config
        self.device = torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    # -- collective helpers ---------------------------------------------------------------------------
    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast(self, value: Any) -> Any:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_local_main(self, action):  # noqa: ANN001 - any zero-argument callable
        """Run `action` on each node's first process while the node's others wait; share its result."""
        result = action() if self.env.is_local_main else None
        self.barrier()
        return result

    # -- inputs ---------------------------------------------------------------------------------------
    def stage_inputs(self, resume_tag: str | None) -> tuple[Path, str]:
        from okvqa_k8s.storage import fetch_dataset, sync_down

        spec = self.spec
        data_dir = Path(spec.dataset.uri.removeprefix("file://")).expanduser()
        if dataset_kind(spec.dataset.uri, spec.dataset.train_split) == "staged":
            data_dir = self.dir / "dataset"
            self.on_local_main(lambda: fetch_dataset(spec.dataset.uri, data_dir))
        model_path = spec.model.name
        if model_path.startswith("s3://"):
            model_path = str(self.dir / "model")
            self.on_local_main(lambda: sync_down(spec.model.name, model_path))
        elif is_hub_id(model_path):
            self.on_local_main(lambda: hub_snapshot(spec.model.name))
            model_path = str(hub_snapshot(spec.model.name))
        else:
            model_path = str(Path(model_path.removeprefix("file://")).expanduser())
        if resume_tag:
            self.on_local_main(
                lambda: ckpt.download_node_checkpoint(
                    _join(self.ckpt_uri, resume_tag), self.ckpt_root / resume_tag, self.env.node_global_ranks
                )
            )
        return data_dir, model_path

    def find_resume_tag(self) -> str | None:
        from okvqa_k8s.storage import latest_complete_checkpoint

        tag = (
            latest_complete_checkpoint(self.ckpt_uri, layout.node_markers(self.env.nnodes))
            if self.env.is_main
            else None
        )
        return self.broadcast(tag)

    # -- the run --------------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        import torch

        from okvqa_k8s.train.engine import make_engine
        from okvqa_k8s.train.model import load_model, load_processor

        spec, t, env = self.spec, self.t, self.env
        resume_tag = self.find_resume_tag()
        data_dir, model_path = self.stage_inputs(resume_tag)

        processor = load_processor(model_path)
        records = load_records(data_dir / f"{spec.dataset.train_split}.json")
        dataset = SupervisedDataset(
            data_dir, records, processor, t.max_length, prompt_template=t.prompt_template
        )
        lengths = dataset.text_lengths()
        batches_per_epoch = global_batches_per_epoch(len(dataset), t.per_device_batch_size, env.world_size)
        updates_per_epoch = batches_per_epoch // t.gradient_accumulation_steps
        if updates_per_epoch < 1:
            raise UserError(
                f"{spec.dataset.train_split}.json has {len(dataset)} samples, fewer than one optimiser step "
                f"(perDeviceBatchSize x gradientAccumulationSteps x {env.world_size} processes)"
            )
        total = t.max_steps or math.ceil(t.epochs * updates_per_epoch)

        torch.manual_seed(t.seed)
        model = load_model(model_path, dtype=spec.model.dtype, attention=spec.model.attention)
        engine, peft_model = make_engine(
            model, spec, self.raw_ds_config, world_size=env.world_size, total_steps=total
        )
        state = TrainerState(total_steps=total, world_size=env.world_size)
        if resume_tag:
            loaded, _ = engine.load_checkpoint(
                str(self.ckpt_root), tag=resume_tag, load_module_strict=False, load_lr_scheduler_states=True
            )
            if loaded is None:
                raise RuntimeError(f"DeepSpeed could not load {resume_tag} from {self.ckpt_root}")
            state = TrainerState.read(self.ckpt_root / resume_tag / ckpt.TRAINER_STATE)
            if state.world_size != env.world_size:
                raise UserError(
                    f"{resume_tag} was written by {state.world_size} processes, this job has "
                    f"{env.world_size}; "
                    "ZeRO shards cannot be re-partitioned: run with the original size or a new outputUri"
                )
            state.total_steps = total
            log.info("resuming from %s (step %d of %d)", resume_tag, state.global_step, total)

        loop = _Loop(self, engine, dataset, lengths, state, updates_per_epoch, resume_tag)
        loop.run(total)
        return self.finish(engine, peft_model, model_path, state, loop)

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self, engine: Any, state: TrainerState) -> None:
        from okvqa_k8s.storage import list_complete_checkpoints

        tag = ckpt.tag_for(state.global_step)
        engine.save_checkpoint(str(self.ckpt_root), tag=tag, exclude_frozen_parameters=True)
        if self.env.is_main:
            atomic_write_json(self.ckpt_root / tag / ckpt.TRAINER_STATE, asdict(state))
        if self.env.is_main:  # before the barrier: no node uploads (or marks) this tag until it is done
            ckpt.clear_markers(_join(self.ckpt_uri, tag), self.env.nnodes)
        self.barrier()  # every rank's shard is on its node's disk
        if self.env.is_local_main:
            ckpt.upload_node_checkpoint(self.ckpt_root / tag, _join(self.ckpt_uri, tag), self.env.node_rank)
            ckpt.prune_local(self.ckpt_root, self.t.save_total_limit)
        self.sync_tensorboard()
        self.barrier()  # every node's marker is written: the checkpoint is complete
        if self.env.is_main:
            complete = list_complete_checkpoints(self.ckpt_uri, layout.node_markers(self.env.nnodes))
            ckpt.prune_remote(self.ckpt_uri, complete, self.t.save_total_limit)
        log.info("checkpoint %s saved to %s", tag, self.ckpt_uri)

    def sync_tensorboard(self) -> None:
        from okvqa_k8s.storage import sync_up

        tb = self.dir / "tensorboard"
        if self.env.is_main and tb.is_dir():
            sync_up(tb, _join(self.spec.output_uri, layout.TENSORBOARD))

    # -- the end --------------------------------------------------------------------------------------
    def gather_trainable(self, engine: Any) -> dict[str, Any]:
        """The trainable weights as full CPU tensors on rank 0 (a collective under ZeRO-3)."""
        import deepspeed

        named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
        out: dict[str, Any] = {}
        if zero_stage(self.raw_ds_config) == 3:
            with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
                if self.env.is_main:
                    out = {n: p.detach().cpu().clone() for n, p in named}
        elif self.env.is_main:
            out = {n: p.detach().cpu().clone() for n, p in named}
        return out

    def finish(self, engine: Any, peft_model: Any, model_path: str, state: TrainerState, loop: _Loop) -> dict:
        from okvqa_k8s.storage import mark_complete, sync_up, write_json
        from okvqa_k8s.train.merge import merge_adapter, save_adapter

        loop.close()
        weights = self.gather_trainable(engine)
        metrics: dict[str, Any] = {}
        if self.env.is_main:
            out = self.spec.output_uri
            final = self.dir / "final"
            adapter = save_adapter(peft_model, weights, final / "adapter", base_name=self.spec.model.name)
            merged = merge_adapter(model_path, adapter, final / "merged", dtype=self.spec.model.dtype)
            sync_up(adapter, _join(out, layout.ADAPTER))
            sync_up(merged, layout.model_uri(self.spec))
            metrics = loop.metrics(zero_stage(self.raw_ds_config))
            atomic_write_json(final / layout.METRICS, metrics)
            write_json(_join(out, layout.METRICS), metrics)
            self.sync_tensorboard()
            mark_complete(out, name=layout.COMPLETE, payload={"global_step": state.global_step})
            log.info("training complete: %s", out)
        self.barrier()
        return metrics


class _Loop:
    """The optimiser-step loop; knows the data order, so a resumed run continues the exact sample stream."""

    def __init__(
        self,
        run: _Run,
        engine: Any,
        dataset: SupervisedDataset,
        lengths: list[int],
        state: TrainerState,
        updates_per_epoch: int,
        resume_tag: str | None,
    ) -> None:
        self.run_ = run
        self.engine = engine
        self.dataset = dataset
        self.lengths = lengths
        self.state = state
        self.updates_per_epoch = updates_per_epoch
        self.resumed_from = resume_tag
        self.start_step = state.global_step
        self.started = time.perf_counter()
        t = run.t
        self.collator = Collator(dataset.processor.tokenizer.pad_token_id)
        self.samples_log = (run.dir / f"samples-rank-{run.env.rank}.jsonl").open("a", encoding="utf-8")
        self.logger = None
        self.progress = None
        if run.env.is_main:
            self.logger = make_logger(
                t.report_to,
                output_uri=run.spec.output_uri,
                config=run.spec.to_wire(),
                log_dir=run.dir / "tensorboard",
                resume_step=state.global_step,
            )
            self.progress = ProgressFile(layout.progress_uri(run.spec))

    def micro_batches(self, epoch: int, first_update: int):
        """This rank's micro-batches of `epoch`, starting at optimiser step `first_update`."""
        from torch.utils.data import DataLoader

        t, env = self.run_.t, self.run_.env
        batches = rank_batches(
            self.lengths,
            batch_size=t.per_device_batch_size,
            world_size=env.world_size,
            rank=env.rank,
            epoch=epoch,
            seed=t.seed,
            group_by_length=t.group_by_length,
        )
        accum = t.gradient_accumulation_steps
        batches = batches[first_update * accum : self.updates_per_epoch * accum]
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches,
            collate_fn=self.collator,
            num_workers=t.dataloader_workers,
            pin_memory=self.run_.device.type == "cuda",
        )
        return iter(loader)

    def run(self, total: int) -> None:
        import torch
        import torch.distributed as dist

        run, t, env = self.run_, self.run_.t, self.run_.env
        engine = self.engine
        engine.train()
        pbar = (
            bar(total=total, initial=self.state.global_step, desc="train", unit="step")
            if env.is_main
            else contextlib.nullcontext()
        )
        it = None
        with pbar:
            for step in range(self.state.global_step, total):
                epoch, position = divmod(step, self.updates_per_epoch)
                if it is None or position == 0:
                    it = self.micro_batches(epoch, position)
                began = time.perf_counter()
                loss_sum, tokens = 0.0, 0
                for _ in range(t.gradient_accumulation_steps):
                    batch = next(it)
                    self.samples_log.write(
                        json.dumps({"step": step + 1, "ids": batch.pop("sample_ids")}) + "\n"
                    )
                    batch = {k: v.to(run.device) for k, v in batch.items()}
                    loss = engine(**batch).loss
                    engine.backward(loss)
                    engine.step()
                    loss_sum += float(loss.detach())
                    tokens += int(batch["attention_mask"].sum())
                self.samples_log.flush()
                totals = torch.tensor([loss_sum / t.gradient_accumulation_steps, tokens], dtype=torch.float64)
                dist.all_reduce(totals)
                elapsed = time.perf_counter() - began
                samples = t.per_device_batch_size * t.gradient_accumulation_steps * env.world_size
                self.state.global_step = step + 1
                record = {
                    "step": step + 1,
                    "loss": round(float(totals[0]) / env.world_size, 6),
                    **self.learning_rates(),
                    "samples_per_second": round(samples / elapsed, 3),
                    "tokens_per_second": round(float(totals[1]) / elapsed, 1),
                    "epoch": round((step + 1) / self.updates_per_epoch, 4),
                }
                if env.is_main:
                    self.report(record, total, pbar)
                if (step + 1) % t.save_steps == 0 or step + 1 == total:
                    run.save_checkpoint(engine, self.state)

    def learning_rates(self) -> dict[str, float]:
        out = {}
        for group in self.engine.optimizer.param_groups:
            key = "mm_projector_lr" if str(group.get("name", "")).startswith("projector") else "learning_rate"
            out[key] = group["lr"]
        return out

    def report(self, record: dict[str, float], total: int, pbar: Any) -> None:
        self.state.log_history.append(record)
        if record["step"] % self.run_.t.logging_steps == 0 or record["step"] == total:
            self.logger.log({k: v for k, v in record.items() if k != "step"}, record["step"])
        self.progress.update(
            step=record["step"],
            total_steps=total,
            loss=record["loss"],
            sps=record["samples_per_second"],
            epoch=record["epoch"],
            force=record["step"] == total,
        )
        pbar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        pbar.update(1)

    def metrics(self, stage: int) -> dict[str, Any]:
        history = self.state.log_history
        this_attempt = [r for r in history if r["step"] > self.start_step][1:] or history[-1:]
        tail = history[-max(1, len(history) // 10) :]
        return {
            "global_step": self.state.global_step,
            "total_steps": self.state.total_steps,
            "epochs": history[-1]["epoch"] if history else 0.0,
            "first_loss": history[0]["loss"] if history else None,
            "final_loss": sum(r["loss"] for r in tail) / len(tail) if tail else None,
            "train_loss": sum(r["loss"] for r in history) / len(history) if history else None,
            "samples_per_second": _mean(r["samples_per_second"] for r in this_attempt),
            "tokens_per_second": _mean(r["tokens_per_second"] for r in this_attempt),
            "train_runtime_s": round(time.perf_counter() - self.started, 2),
            "world_size": self.run_.env.world_size,
            "nnodes": self.run_.env.nnodes,
            "zero_stage": stage,
            "resumed_from": self.resumed_from,
            "log_history": history,
        }

    def close(self) -> None:
        self.samples_log.close()
        if self.logger is not None:
            self.logger.close()


def _mean(values: Any) -> float:
    values = list(values)
    return round(sum(values) / len(values), 3) if values else 0.0


def _join(uri: str, *parts: str) -> str:
    from okvqa_k8s.storage import join

    return join(uri, *parts)
