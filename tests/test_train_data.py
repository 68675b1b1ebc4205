"""Training inputs: tokenised conversations, labels, padding, rank shards, DeepSpeed autos, env contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from okvqa_k8s.errors import UserError
from okvqa_k8s.prompts import LLAVA_V1_SYSTEM, PROMPT_TEMPLATES, render_prompt
from okvqa_k8s.train.checkpoints import checkpoints_to_prune, files_for_node
from okvqa_k8s.train.data import (
    IGNORE_INDEX,
    Collator,
    SupervisedDataset,
    answer_text,
    expand_to_square,
    load_records,
    mean_colour,
    rank_batches,
    target_length,
)
from okvqa_k8s.train.ds_config import fill_auto, load_ds_config
from okvqa_k8s.train.env import dist_env


def test_collated_batch_labels_only_the_answer_and_eos(tiny_model: Path, prepared_dataset: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    tok = processor.tokenizer
    records = load_records(prepared_dataset / "train.json")
    # Mixed lengths: the shortest and the longest question of the split in one batch.
    by_len = sorted(range(len(records)), key=lambda i: len(records[i]["conversations"][0]["value"]))
    picked = [by_len[0], by_len[-1], by_len[len(by_len) // 2]]
    dataset = SupervisedDataset(prepared_dataset, records, processor, max_length=512)
    batch = Collator(tok.pad_token_id)([dataset[i] for i in picked])

    lengths = batch["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) > 1, "the batch must mix lengths to test padding"
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for row, index in enumerate(picked):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        n = lengths[row]
        assert mask[:n].all() and not mask[n:].any()
        assert (ids[n:] == tok.pad_token_id).all() and (labels[n:] == IGNORE_INDEX).all()
        supervised = labels[labels != IGNORE_INDEX]
        # labels equal the inputs where supervised (the model shifts them itself)
        assert (ids[labels != IGNORE_INDEX] == supervised).all()
        assert tok.decode(supervised).strip() == answer_text(records[index]) + tok.eos_token
        assert supervised[-1] == tok.eos_token_id
        assert not (labels[ids == image_id] != IGNORE_INDEX).any(), "image tokens must be masked"
        assert (ids == image_id).sum() == 16  # (64 / 16)^2 patches of the tiny CLIP
        prompt = tok.decode(ids[: n - len(supervised)])
        assert (
            prompt.endswith("ASSISTANT:")
            and records[index]["conversations"][0]["value"].split("\n")[1] in prompt
        )
    assert batch["pixel_values"].shape == (3, 3, 64, 64)


@pytest.mark.parametrize("template", PROMPT_TEMPLATES)
def test_prompt_matches_what_a_server_renders(
    tiny_model: Path, prepared_dataset: Path, template: str
) -> None:
    """Training and inference must agree token for token on the prompt, or the gain evaporates."""
    from transformers import AutoProcessor

    from okvqa_k8s.serve.protocol import Message, to_conversation

    processor = AutoProcessor.from_pretrained(tiny_model)
    record = load_records(prepared_dataset / "train.json")[0]
    sample = SupervisedDataset(prepared_dataset, [record], processor, 512, prompt_template=template)[0]
    question = record["conversations"][0]["value"].replace("<image>", "").strip()
    # What the evaluation client sends, through the server's message conversion and prompt renderer.
    message = Message.model_validate(
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}},
                {"type": "text", "text": question},
            ],
        }
    )
    conversation, _ = to_conversation([message])
    prompt = render_prompt(processor, conversation, template)
    assert prompt.startswith(LLAVA_V1_SYSTEM) == (template == "llava_v1")
    image = Image.open(prepared_dataset / record["image"]).convert("RGB")
    served = processor(
        text=prompt,
        images=expand_to_square(image, mean_colour(processor.image_processor)),
        return_tensors="pt",
    )
    n_prompt = int((sample["labels"] == IGNORE_INDEX).sum())
    assert sample["input_ids"][:n_prompt].tolist() == served["input_ids"][0].tolist()


def test_prompt_longer_than_max_length_is_a_user_error(tiny_model: Path, prepared_dataset: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    records = load_records(prepared_dataset / "train.json")
    with pytest.raises(UserError, match="maxLength"):
        SupervisedDataset(prepared_dataset, records, processor, max_length=20)[0]


def test_expand_to_square_centres_on_the_background() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    out = expand_to_square(img, (1, 2, 3))
    assert out.size == (40, 40)
    assert out.getpixel((0, 0)) == (1, 2, 3) and out.getpixel((39, 39)) == (1, 2, 3)
    assert out.getpixel((20, 20)) == (255, 0, 0) and out.getpixel((20, 10)) == (255, 0, 0)
    assert out.getpixel((20, 9)) == (1, 2, 3) and out.getpixel((20, 30)) == (1, 2, 3)


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_batches_are_disjoint_and_cover_whole_global_batches(group: bool, world: int) -> None:
    lengths = [(i * 37) % 23 + 5 for i in range(101)]
    seen: list[int] = []
    per_rank = []
    for rank in range(world):
        batches = rank_batches(
            lengths, batch_size=4, world_size=world, rank=rank, epoch=1, seed=7, group_by_length=group
        )
        per_rank.append(batches)
        assert all(len(b) == 4 for b in batches)
        seen += [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) == (101 // (4 * world)) * 4 * world
    assert len({len(b) for b in per_rank}) == 1, "every rank must run the same number of steps"
    other_epoch = rank_batches(
        lengths, batch_size=4, world_size=world, rank=0, epoch=2, seed=7, group_by_length=group
    )
    assert other_epoch != per_rank[0]


def test_length_grouping_reduces_padding() -> None:
    lengths = [5 + (i * 7919) % 200 for i in range(512)]

    def padding(group: bool) -> int:
        batches = rank_batches(
            lengths, batch_size=8, world_size=2, rank=1, epoch=0, seed=0, group_by_length=group
        )
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(True) < padding(False) / 4


def test_fill_auto_takes_sizes_from_the_spec_and_refuses_unknown_autos(tmp_path: Path) -> None:
    for stage in ("zero2", "zero3"):
        cfg = fill_auto(
            load_ds_config(stage), micro_batch=4, grad_accum=2, world_size=3, dtype="bf16", hidden_size=64,
            learning_rate=1e-4, weight_decay=0.0,
        )  # fmt: skip
        assert cfg["train_batch_size"] == 24 and cfg["gradient_accumulation_steps"] == 2
        assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False
        assert "auto" not in json.dumps(cfg)
        assert cfg["zero_optimization"]["stage"] == int(stage[-1])
    custom = tmp_path / "ds.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 2, "mystery": "auto"}}))
    with pytest.raises(UserError, match="mystery"):
        fill_auto(load_ds_config(str(custom)), micro_batch=1, grad_accum=1, world_size=1, dtype="fp32",
                  hidden_size=8, learning_rate=1e-4, weight_decay=0.0)  # fmt: skip
    custom.write_text(json.dumps({"train_batch_size": 7}))
    with pytest.raises(UserError, match="train_batch_size"):
        fill_auto(load_ds_config(str(custom)), micro_batch=1, grad_accum=1, world_size=2, dtype="fp32",
                  hidden_size=8, learning_rate=1e-4, weight_decay=0.0)  # fmt: skip


@pytest.mark.parametrize("choice", ["zero4", "/nonexistent/ds.json"])
def test_unknown_deepspeed_choice_is_a_user_error(choice: str) -> None:
    with pytest.raises(UserError, match="zero2, zero3"):
        load_ds_config(choice)


def test_dist_env_reads_torchrun_and_refuses_multinode_without_it() -> None:
    torchrun = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}
    env = dist_env(torchrun)
    assert (env.rank, env.node_rank, env.nnodes, env.launched) == (3, 1, 2, True)
    assert list(env.node_global_ranks) == [2, 3]
    assert dist_env({}).world_size == 1
    # What the operator injects into a pod, if someone runs the command without torchrun:
    with pytest.raises(UserError, match="torchrun"):
        dist_env({"PET_NNODES": "2", "PET_NODE_RANK": "1", "WORLD_SIZE": "2", "RANK": "1"})


def test_each_node_downloads_shared_files_and_only_its_own_shards() -> None:
    names = [
        "mp_rank_00_model_states.pt",
        "trainer_state.json",
        "_COMPLETE.node-0",
        ".okvqa-index.json",
        *(f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(4)),
        *(f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(4)),
    ]
    node1 = files_for_node(names, range(2, 4))
    assert "mp_rank_00_model_states.pt" in node1 and "trainer_state.json" in node1
    assert not any(n.startswith(("_COMPLETE", ".okvqa")) for n in node1)
    shards = [n for n in node1 if n.startswith("zero_pp_rank_")]
    assert sorted({n.split("_")[3] for n in shards}) == ["2", "3"] and len(shards) == 4


def test_prune_keeps_the_newest_by_step_not_by_name() -> None:
    tags = ["checkpoint-100", "checkpoint-20", "checkpoint-3", "tensorboard"]
    assert checkpoints_to_prune(tags, 2) == ["checkpoint-3"]


def test_target_is_what_the_conversation_holds_beyond_the_prompt() -> None:
    assert target_length([1, 5, 6], [1, 5, 6, 7, 2]) == 2
    for prompt, conversation in (([1, 5, 6], [1, 5, 9, 7, 2]), ([1, 5], [1, 5]), ([1, 5, 6], [1, 5])):
        with pytest.raises(ValueError, match="not a prefix"):
            target_length(prompt, conversation)
