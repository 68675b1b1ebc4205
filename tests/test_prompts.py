"""The run's conversation template: LLaVA's vicuna_v1 text exactly, the same in training and serving.

The expected strings are what `Conversation.get_prompt()` of haotian-liu/LLaVA `llava/conversation.py`
(c121f0432da27facab705978f83c4ada465e46fd) returns for `conv_templates["v1"]` with the same messages,
obtained by running that file outside this repository.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from okvqa_k8s.data.prepare import human_turn
from okvqa_k8s.prompts import (
    LLAVA_V1_CHAT_TEMPLATE,
    LLAVA_V1_SYSTEM,
    chat_template,
    render_conversation,
    render_prompt,
)
from okvqa_k8s.train.data import user_messages

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
ASKED = (
    f"{SYSTEM} USER: <image>\nWhat is the man holding?\n"
    "Answer the question using a single word or phrase. ASSISTANT:"
)


@pytest.fixture(scope="module")
def processor(tiny_model: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model)


def test_llava_v1_is_llavas_vicuna_v1_conversation(processor: Any) -> None:
    assert LLAVA_V1_SYSTEM == SYSTEM
    messages = user_messages(human_turn("What is the man holding?"))
    assert render_prompt(processor, messages, "llava_v1") == ASKED
    prompt, conversation = render_conversation(processor, messages, "new york", "llava_v1")
    assert (prompt, conversation) == (ASKED, f"{ASKED} new york</s>")


def test_llava_v1_turns_system_message_and_string_content(processor: Any) -> None:
    first = user_messages(human_turn("What is the man holding?"))
    follow_up = [
        {"role": "assistant", "content": "a frisbee"},
        {"role": "user", "content": [{"type": "text", "text": "What colour is it?"}]},
    ]
    assert render_prompt(processor, first + follow_up, "llava_v1") == (
        f"{ASKED} a frisbee</s>USER: What colour is it? ASSISTANT:"
    )
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert render_prompt(processor, system, "llava_v1") == "Be brief. USER: hi ASSISTANT:"


def test_hf_is_the_checkpoints_own_template(processor: Any) -> None:
    messages = user_messages(human_turn("What is the man holding?"))
    own = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert render_prompt(processor, messages, "hf") == own and SYSTEM not in own
    prompt, conversation = render_conversation(processor, messages, "new york", "hf")
    assert prompt == own and conversation == f"{own} new york{processor.tokenizer.eos_token}"


def test_the_template_survives_vllms_inline_chat_template() -> None:
    """vLLM reads `--chat-template` as a path, else (it holds `{`) as the template; older releases
    unescape it with `unicode_escape` first, which must change nothing."""
    assert "{" in LLAVA_V1_CHAT_TEMPLATE and "\\" not in LLAVA_V1_CHAT_TEMPLATE
    assert LLAVA_V1_CHAT_TEMPLATE.isascii()
    assert codecs.decode(LLAVA_V1_CHAT_TEMPLATE, "unicode_escape") == LLAVA_V1_CHAT_TEMPLATE


def test_unknown_template_is_refused() -> None:
    assert chat_template("hf") is None
    with pytest.raises(ValueError, match="expected one of llava_v1, hf"):
        chat_template("chatml")


@pytest.mark.parametrize("template", ["llava_v1", "hf"])
def test_the_server_prompts_with_the_runs_template(tiny_model: Path, processor: Any, template: str) -> None:
    from okvqa_k8s.serve.engine import GenRequest, LlavaEngine
    from okvqa_k8s.train.data import expand_to_square, mean_colour

    engine = LlavaEngine.load(tiny_model, prompt_template=template)
    image = Image.new("RGB", (64, 48), "red")
    conversation = user_messages(human_turn("What colour is the shape?"))
    (result,) = engine.generate([GenRequest(conversation, [image], max_tokens=2)])
    expected = processor(
        text=render_prompt(processor, conversation, template),
        images=expand_to_square(image, mean_colour(processor.image_processor)),
    )["input_ids"][0]
    assert result.prompt_tokens == len(expected)
    own = processor(text=render_prompt(processor, conversation, "hf"), images=image)["input_ids"][0]
    assert (result.prompt_tokens > len(own)) == (template == "llava_v1"), "the system prompt is sent"
