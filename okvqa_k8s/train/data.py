"""LLaVA conversation records → tensors: pad-to-square images, templated prompts, answer-only labels.

Three rules carry the training signal and are easy to break silently, so each lives in one place here:
- the image is padded to a square with the processor's mean colour (LLaVA-1.5's `image_aspect_ratio=pad`),
  so the centre crop of the CLIP processor never cuts shapes off the sides;
- the prompt is rendered with the run's template (`okvqa_k8s.prompts`), exactly as the server renders it
  at inference, and the target is what the template appends after it for the assistant turn, always
  ending with the eos token so the model learns to stop;
- the whole conversation is tokenised at once and only the tokens after the prompt's carry labels;
  prompt, image and padding tokens are -100. Tokenising the target on its own would be wrong for
  Llama's SentencePiece vocabulary: ` answer</s>` alone starts with an extra `▁` token that the
  conversation never contains (`target_length`; tests/test_train_tokenization.py shows it on Llama-2's).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from okvqa_k8s.data.images import FORMATS
from okvqa_k8s.errors import UserError
from okvqa_k8s.prompts import DEFAULT_PROMPT_TEMPLATE, render_conversation

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"


def load_records(path: Path) -> list[dict[str, Any]]:
    """Read a split file of LLaVA records, refusing malformed ones with the record's position."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path}: split file not found (expected a dataset prepared by `data prepare`)"
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno})") from None
    if not isinstance(records, list) or not records:
        raise UserError(f"{path}: expected a non-empty list of LLaVA records")
    for i, rec in enumerate(records):
        conv = rec.get("conversations") if isinstance(rec, dict) else None
        if not (
            isinstance(conv, list)
            and len(conv) >= 2
            and isinstance(rec.get("image"), str)
            and conv[0].get("from") == "human"
            and conv[1].get("from") == "gpt"
        ):
            raise UserError(f"{path}: record {i}: expected {{id, image, conversations: [human, gpt]}}")
    return records


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Centre `image` on a square of `background` (LLaVA-1.5's expand2square)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = Image.new(image.mode, (side, side), background)
    out.paste(image, ((side - width) // 2, (side - height) // 2))
    return out


def mean_colour(image_processor: Any) -> tuple[int, int, int]:
    """The processor's normalisation mean as an RGB colour: it normalises to zero, i.e. 'no signal'."""
    return tuple(int(round(x * 255)) for x in image_processor.image_mean)  # type: ignore[return-value]


def load_image(path: Path, background: tuple[int, int, int]) -> Image.Image:
    with Image.open(path, formats=FORMATS) as img:
        return expand_to_square(img.convert("RGB"), background)


def user_messages(human_value: str) -> list[dict[str, Any]]:
    """The human turn of a record as chat-template messages (the image first, like LLaVA's prompt)."""
    text = human_value.replace(IMAGE_TOKEN, "").strip()
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def question_text(record: dict[str, Any]) -> str:
    return record["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip()


def answer_text(record: dict[str, Any]) -> str:
    return str(record["conversations"][1]["value"]).strip()


def target_length(prompt_ids: Sequence[int], conversation_ids: Sequence[int]) -> int:
    """How many of the conversation's last tokens are the target: those beyond the prompt's own tokens.

    The prompt tokenised alone is what a server feeds the model, so it must be a prefix of the
    conversation's tokens; otherwise the labels would teach a continuation of a prompt nobody sends.
    """
    n = len(prompt_ids)
    if len(conversation_ids) <= n or list(conversation_ids[:n]) != list(prompt_ids):
        raise ValueError(
            "the prompt's tokens are not a prefix of the conversation's: "
            f"{list(prompt_ids[-3:])} vs {list(conversation_ids[max(n - 3, 0) : n + 3])}"
        )
    return len(conversation_ids) - n


class SupervisedDataset:
    """Map-style dataset of one split; `__getitem__` returns unpadded tensors of one sample."""

    def __init__(
        self,
        root: Path,
        records: list[dict[str, Any]],
        processor: Any,
        max_length: int,
        *,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    ) -> None:
        self.root = root
        self.records = records
        self.processor = processor
        self.max_length = max_length
        self.prompt_template = prompt_template
        self.background = mean_colour(processor.image_processor)

    def __len__(self) -> int:
        return len(self.records)

    def text_lengths(self) -> list[int]:
        """Token counts of question + answer: the image adds the same count to all, so it is left out."""
        texts = [f"{question_text(r)} {answer_text(r)}" for r in self.records]
        return [len(ids) for ids in self.processor.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        messages = user_messages(record["conversations"][0]["value"])
        prompt, conversation = render_conversation(
            self.processor, messages, answer_text(record), self.prompt_template
        )
        tokenizer = self.processor.tokenizer
        try:
            n_target = target_length(tokenizer(prompt)["input_ids"], tokenizer(conversation)["input_ids"])
        except ValueError as exc:
            raise UserError(f"record {record.get('id')}: training.promptTemplate: {exc}") from None
        # The processor expands the image token in the prompt only; the target is the same tail.
        enc = self.processor(text=conversation, images=image, return_tensors="pt")
        input_ids = enc["input_ids"][0]
        n_prompt = len(input_ids) - n_target
        if n_prompt >= self.max_length:
            raise UserError(
                f"record {record.get('id')}: prompt is {n_prompt} tokens (image included), "
                f"training.maxLength is {self.max_length}; raise maxLength"
            )
        labels = input_ids.clone()
        labels[:n_prompt] = IGNORE_INDEX
        input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
        return {"input_ids": input_ids, "labels": labels, "pixel_values": enc["pixel_values"][0]}

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_image(self.root / record["image"], self.background)
        return {**self.encode(record, image), "sample_id": str(record.get("id", index))}


@dataclass
class Collator:
    """Right-pads a batch of mixed lengths: pad id in inputs, -100 in labels, 0 in the attention mask."""

    pad_token_id: int

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(s["input_ids"]) for s in samples)
        n = len(samples)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for i, s in enumerate(samples):
            k = len(s["input_ids"])
            input_ids[i, :k] = s["input_ids"]
            labels[i, :k] = s["labels"]
            attention_mask[i, :k] = 1
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "sample_ids": [s["sample_id"] for s in samples],
        }


def global_batches_per_epoch(n_samples: int, batch_size: int, world_size: int) -> int:
    """Whole global batches in one epoch; the remainder is dropped (a different one each epoch)."""
    return n_samples // (batch_size * world_size)


def rank_batches(
    lengths: Sequence[int],
    *,
    batch_size: int,
    world_size: int,
    rank: int,
    epoch: int,
    seed: int,
    group_by_length: bool,
    megabatch_factor: int = 16,
) -> list[list[int]]:
    """This rank's micro-batches (dataset indices) for one epoch, disjoint from every other rank's.

    Every rank computes the same global plan from (seed, epoch) and takes its own slice of each global
    batch, so no communication is needed and no sample is seen twice in an epoch. With grouping, a
    shuffled window of `megabatch_factor` global batches is sorted by length (longest first) before being
    cut into global batches, so the samples of one step, across all ranks, have similar lengths and little
    padding, while the order of steps stays random (LLaVA's LengthGroupedSampler, made rank-aware).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    global_size = batch_size * world_size
    steps = global_batches_per_epoch(len(lengths), batch_size, world_size)
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order = order[: steps * global_size]
    if group_by_length:
        window = global_size * megabatch_factor
        grouped: list[int] = []
        for start in range(0, len(order), window):
            grouped += sorted(order[start : start + window], key=lambda i: -lengths[i])
        order = grouped
    batches = [order[s * global_size : (s + 1) * global_size] for s in range(steps)]
    if group_by_length:
        rng.shuffle(batches)
    return [b[rank * batch_size : (rank + 1) * batch_size] for b in batches]
