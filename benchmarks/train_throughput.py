"""Training throughput: samples/s, tokens/s, peak memory (and MFU on a GPU) of one training process.

Measures the production engine (`okvqa_k8s.train.engine.make_engine`: LoRA on the language model, full
projector, frozen vision tower, DeepSpeed ZeRO) on real sequence shapes: LLaVA-1.5's 576 image tokens
(336 px / patch 14) plus the text lengths of a prepared dataset, batched length-grouped as training does.
Each configuration runs in its own process, so one run's memory or DeepSpeed state never leaks into the
next.

    # CPU, the toy model at LLaVA-1.5's image geometry (default)
    python benchmarks/train_throughput.py
    # GPU: the LLaVA-1.5-7B architecture at random init in bf16 (no download), LoRA r=128
    python benchmarks/train_throughput.py --model llava-1.5-7b --batch-size 16 \
        --deepspeed zero2,zero3 --grad-ckpt on,off --attention sdpa,eager
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bf16 dense peak of the GPUs this may run on (TFLOP/s), for MFU.
PEAK_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
TEXT_TOKENS_FALLBACK = 40


def llava_7b_config() -> Any:
    """llava-hf/llava-1.5-7b-hf's architecture: CLIP ViT-L/14-336 + Vicuna-7B (Llama), built from defaults."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
    )  # fmt: skip
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, image_seq_length=576)


def text_lengths(dataset: Path | None, work: Path) -> tuple[list[int], Path | None]:
    """Per-sample text token counts (template + question + answer + eos) of a prepared dataset."""
    from okvqa_k8s.data.synth import make_prepared_dataset
    from okvqa_k8s.train.data import SupervisedDataset, load_records, question_text
    from okvqa_k8s.train.model import load_processor
    from okvqa_k8s.train.tiny import build_tiny_model

    dataset = dataset or make_prepared_dataset(work / "dataset", size=600, seed=0)
    records = load_records(dataset / "train.json")
    texts = [f"{question_text(r)} {r['conversations'][1]['value']}" for r in records]
    tiny = build_tiny_model(work / "tiny", texts=texts, image_size=336, patch_size=14)
    processor = load_processor(str(tiny))
    ds = SupervisedDataset(dataset, records, processor, max_length=4096)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    lengths = []
    for i in range(min(len(ds), 512)):
        ids = ds[i]["input_ids"]
        lengths.append(int((ids != image_id).sum()))
    return lengths, tiny


def synthetic_batch(lengths: list[int], image_tokens: int, config: Any, image_size: int) -> dict[str, Any]:
    """input_ids = <bos> <image>*N text..., right-padded; labels on the last 3 tokens (the answer + eos)."""
    import torch

    vocab = config.text_config.vocab_size
    image_id = config.image_token_index
    longest = image_tokens + max(lengths)
    n = len(lengths)
    input_ids = torch.zeros((n, longest), dtype=torch.long)
    labels = torch.full((n, longest), -100, dtype=torch.long)
    mask = torch.zeros((n, longest), dtype=torch.long)
    for i, text in enumerate(lengths):
        total = image_tokens + text
        row = torch.randint(3, min(vocab, image_id), (total,))
        row[1 : 1 + image_tokens] = image_id
        input_ids[i, :total] = row
        labels[i, total - 3 : total] = row[total - 3 : total]
        mask[i, :total] = 1
    pixel_values = torch.randn(n, 3, image_size, image_size)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "pixel_values": pixel_values}


def train_flops(
    config: Any, tokens: int, seq_sq: int, images: int, lm_params: int, vision_params: int
) -> float:
    """Model FLOPs of one LoRA step (no recompute counted, as MFU is defined).

    Frozen linears cost 2N per token forward and 2N backward (activation gradients only); attention
    4·L·T²·d forward, twice that backward; the frozen vision tower runs forward only.
    """
    t = config.text_config
    v = config.vision_config
    patches = (v.image_size // v.patch_size) ** 2 + 1
    lm = 4 * lm_params * tokens + 12 * t.num_hidden_layers * seq_sq * t.hidden_size
    vision = images * (2 * vision_params * patches + 4 * v.num_hidden_layers * patches**2 * v.hidden_size)
    return float(lm + vision)


def run_one(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import LlavaForConditionalGeneration

    from okvqa_k8s.spec import FineTuneSpec
    from okvqa_k8s.train.data import rank_batches
    from okvqa_k8s.train.ds_config import load_ds_config
    from okvqa_k8s.train.engine import init_distributed, make_engine
    from okvqa_k8s.train.env import single_process_rendezvous
    from okvqa_k8s.train.model import attention_implementation, torch_dtype

    single_process_rendezvous(os.environ)  # type: ignore[arg-type]
    init_distributed()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    with tempfile.TemporaryDirectory() as work:
        lengths, tiny = text_lengths(Path(cfg["dataset"]) if cfg["dataset"] else None, Path(work))
        torch.manual_seed(0)
        attention = attention_implementation(cfg["attention"])
        if cfg["model"] == "llava-1.5-7b":
            config = llava_7b_config()
            with torch.device(device):
                model = LlavaForConditionalGeneration._from_config(
                    config, dtype=torch_dtype(cfg["dtype"]), attn_implementation=attention
                )
        else:
            path = str(tiny) if cfg["model"] == "tiny" else cfg["model"]
            model = LlavaForConditionalGeneration.from_pretrained(
                path, dtype=torch_dtype(cfg["dtype"]), attn_implementation=attention
            )
            config = model.config
        lm_params = (
            sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
        )
        vision_params = sum(p.numel() for p in model.model.vision_tower.parameters())
        steps = cfg["warmup"] + cfg["steps"]
        spec = FineTuneSpec.model_validate(
            {
                "model": {"name": cfg["model"], "dtype": cfg["dtype"], "attention": cfg["attention"]},
                "dataset": {"uri": "unused"},
                "outputUri": "unused",
                "lora": {"r": cfg["lora_r"], "alpha": 2 * cfg["lora_r"]},
                "training": {
                    "perDeviceBatchSize": cfg["batch_size"],
                    "gradientCheckpointing": cfg["grad_ckpt"],
                    "deepspeed": cfg["deepspeed"],
                    "warmupRatio": 0.0,
                },
            }
        )
        engine, _ = make_engine(
            model, spec, load_ds_config(cfg["deepspeed"]), world_size=1, total_steps=steps
        )
        engine.train()
        image_tokens = config.image_seq_length
        image_size = config.vision_config.image_size
        plan = rank_batches(
            lengths, batch_size=cfg["batch_size"], world_size=1, rank=0, epoch=0, seed=0, group_by_length=True
        )
        if not plan:
            raise SystemExit(f"dataset has fewer than {cfg['batch_size']} samples")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        timed = {"samples": 0, "tokens": 0, "flops": 0.0, "seconds": 0.0}
        for step in range(steps):
            batch_lengths = [lengths[i] for i in plan[step % len(plan)]]
            batch = {
                k: v.to(device)
                for k, v in synthetic_batch(batch_lengths, image_tokens, config, image_size).items()
            }
            if cuda:
                torch.cuda.synchronize()
            began = time.perf_counter()
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            if cuda:
                torch.cuda.synchronize()
            if step >= cfg["warmup"]:
                seqs = [image_tokens + n for n in batch_lengths]
                timed["seconds"] += time.perf_counter() - began
                timed["samples"] += len(seqs)
                timed["tokens"] += sum(seqs)
                timed["flops"] += train_flops(
                    config, sum(seqs), sum(s * s for s in seqs), len(seqs), lm_params, vision_params
                )
    result = {
        **cfg,
        "samples_per_s": round(timed["samples"] / timed["seconds"], 3),
        "tokens_per_s": round(timed["tokens"] / timed["seconds"], 1),
        "step_s": round(timed["seconds"] / cfg["steps"], 4),
        "mean_seq_len": round(timed["tokens"] / timed["samples"], 1),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    }
    if cuda:
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        name = torch.cuda.get_device_name(0)
        peak = cfg["peak_tflops"] or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            result["mfu"] = round(timed["flops"] / timed["seconds"] / (peak * 1e12), 4)
    else:
        result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return result


def markdown(rows: list[dict[str, Any]]) -> str:
    mem = "peak_mem_gib" if any("peak_mem_gib" in r for r in rows) else "peak_rss_gib"
    head = f"| ZeRO | grad ckpt | attention | batch | samples/s | tokens/s | step s | {mem} | MFU |"
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
        ckpt = "on" if r["grad_ckpt"] else "off"
        lines.append(
            f"| {r['deepspeed']} | {ckpt} | {r['attention']} | {r['batch_size']} | {r['samples_per_s']} | "
            f"{r['tokens_per_s']} | {r['step_s']} | {r.get(mem, 'n/a')} | {mfu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="tiny", help="tiny | llava-1.5-7b (random init) | a local HF LLaVA dir"
    )
    parser.add_argument(
        "--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on GPU"
    )
    parser.add_argument(
        "--deepspeed", default="zero2,zero3", help="comma-separated: zero2,zero3 or JSON paths"
    )
    parser.add_argument("--grad-ckpt", default="on,off", help="comma-separated: on,off")
    parser.add_argument(
        "--attention", default="sdpa,eager", help="comma-separated: sdpa,eager,flash_attention_2"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--dataset", default=None, help="prepared dataset dir for text lengths (default: synthetic)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: by name)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return

    import torch

    dtype = args.dtype or ("bf16" if torch.cuda.is_available() else "fp32")
    grid = itertools.product(
        args.deepspeed.split(","), [v == "on" for v in args.grad_ckpt.split(",")], args.attention.split(",")
    )
    rows = []
    env = {
        **os.environ,
        "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu"),
    }
    env.setdefault("OKVQA_PROGRESS", "0")
    for stage, ckpt, attention in grid:
        cfg = {
            "model": args.model, "dtype": dtype, "deepspeed": stage, "grad_ckpt": ckpt,
            "attention": attention, "batch_size": args.batch_size, "lora_r": args.lora_r,
            "steps": args.steps, "warmup": args.warmup,
            "dataset": args.dataset, "peak_tflops": args.peak_tflops,
        }  # fmt: skip
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(cfg)], env=env, capture_output=True, text=True
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{stage} ckpt={ckpt} {attention}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line.removeprefix("RESULT ")))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
