"""A toy LLaVA-1.5 with the real architecture, built offline, saved exactly like a hub checkpoint.

Tests and the demo must never download anything, yet they have to exercise the very code path that loads
`llava-hf/llava-1.5-7b-hf`: `LlavaForConditionalGeneration` + `LlavaProcessor` (CLIP image processor,
fast tokenizer, chat template). So the model is `LlavaConfig(CLIPVisionConfig, LlamaConfig)` at toy size and
the tokenizer is a byte-level BPE trained on the dataset's own text, which keeps the vocabulary (and the
embedding and output layers) small while every answer still round-trips exactly through encode/decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from okvqa_k8s.fsutil import atomic_directory
from okvqa_k8s.prompts import LLAVA_V1_CHAT_TEMPLATE

# The tiny model's own (`hf`) template: LLaVA-1.5-hf's shape (USER: <image>\n... ASSISTANT:), but the
# assistant turn ends with the eos token, so a model fine-tuned on it learns to stop and a server can stop
# on eos.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}"
    "{% if message['role'] == 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + eos_token }}{% endgeneration %}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Words the synthetic OK-VQA data uses, so a model built without texts still tokenizes it compactly.
_BASE_TEXT = (
    "USER: ASSISTANT: Answer the question using a single word or phrase. What colour color is the shape? "
    "How many shapes objects are there in the picture image? What shape is this? Which kind of object? "
    "red green blue yellow orange purple white black pink brown gray circle square triangle star "
    "zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 10 yes no"
)

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Byte-level BPE (like Llama's byte fallback: nothing is ever unknown) with <s> prepended like Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Both templates' fixed text (the hf one below, llava_v1's system prompt) tokenise compactly too.
    tok.train_from_iterator([_BASE_TEXT, LLAVA_V1_CHAT_TEMPLATE, CHAT_TEMPLATE, *texts], trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="right",
        model_max_length=4096,
    )


def _widen_language_model_init(model, std: float) -> None:
    """Re-draw the language model's matrices with a larger std than Llama's 0.02.

    The embeddings and the output layer stay frozen under LoRA; at 0.02 and width 128 the largest logit a
    unit-RMS hidden state can reach against a random output row is ~2.5, so the loss cannot fall below ~4
    whatever LoRA learns. At 0.1 the same reach is ~13 and the toy model learns in minutes.
    """
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and ("language_model" in name or name.startswith("lm_head")):
                param.normal_(0.0, std)


def dataset_texts(dataset_dir: str | Path) -> list[str]:
    """Questions and answers of a prepared dataset's splits: what the tiny tokenizer is trained on."""
    from okvqa_k8s.train.data import answer_text, load_records, question_text

    texts: list[str] = []
    for split in ("train", "val"):
        path = Path(dataset_dir) / f"{split}.json"
        if path.is_file():
            texts += [f"{question_text(r)} {answer_text(r)}" for r in load_records(path)]
    return texts


def build_tiny_model(
    out_dir: str | Path,
    *,
    texts: Iterable[str] | None = None,
    seed: int = 0,
    image_size: int = 64,
    patch_size: int = 16,
    hidden_size: int = 128,
    num_layers: int = 2,
) -> Path:
    """Build and save a toy `LlavaForConditionalGeneration` + `LlavaProcessor` into `out_dir`.

    `texts` (questions and answers of the dataset) train the tokenizer. The image is (image_size /
    patch_size)^2 tokens: 16 at the defaults, enough to read colours, shapes and counts off a synthetic
    image while keeping a CPU training step to tens of milliseconds.
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = train_tokenizer(list(texts or []))
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        do_convert_rgb=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    _widen_language_model_init(model, std=0.1)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(out_dir, replace=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Path(out_dir)
