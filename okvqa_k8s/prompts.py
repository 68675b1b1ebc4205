"""The conversation template of a run (`training.promptTemplate`): one for training, serving and evaluation.

`llava_v1` (the default) is the seed's: LLaVA-1.5 was fine-tuned by the original LLaVA code with
`--version v1`, which selects `conv_vicuna_v1` of haotian-liu/LLaVA `llava/conversation.py` (at
c121f0432da27facab705978f83c4ada465e46fd, its HEAD): the Vicuna system prompt, roles `USER`/`ASSISTANT`,
`SeparatorStyle.TWO` with " " after a user turn and "</s>" after an assistant turn, the image token first
in the first user turn. One turn of OK-VQA therefore reads (`⏎` a line break)

  <system> USER: <image>⏎<question>⏎Answer the question using a single word or phrase. ASSISTANT: <answer></s>

and a generation prompt ends with `ASSISTANT:`. LLaVA's evaluation scripts ask with the same template
(`--conv-mode vicuna_v1`). LLaVA's `conv_llava_v1` (a "curious human") is a different, unused one.
`hf` is the chat template shipped with the checkpoint's processor (llava-hf's: no system prompt).

The template is written once, in Jinja, because that is what every consumer takes: training and the
builtin server call `apply_chat_template` with it, vLLM gets it as `--chat-template` (with BOS written by
the template, as vLLM tokenises chat prompts without adding special tokens). So the same messages
render to the same text everywhere, and the training prompt is exactly the prompt a served model sees.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

PromptTemplate = Literal["llava_v1", "hf"]
PROMPT_TEMPLATES: tuple[str, ...] = get_args(PromptTemplate)
DEFAULT_PROMPT_TEMPLATE: PromptTemplate = "llava_v1"

LLAVA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# `Conversation.get_prompt()` of SeparatorStyle.TWO: system + " ", then `ROLE: message` + " " (user) or
# "</s>" (assistant), and a bare `ASSISTANT:` to generate. A system message replaces the default system
# prompt; content may be a string or OpenAI-style parts, whose images come first as `<image>\n` each, like
# LLaVA's preprocess_multimodal puts its one image. No backslash escapes: vLLM may unescape a template
# passed inline, so the line break is a literal one and the system prompt is double-quoted.
LLAVA_V1_CHAT_TEMPLATE = (
    '{%- set system = "' + LLAVA_V1_SYSTEM + '" -%}'
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}"
    "{%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') -%}{%- endif -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{{- system + ' ' -}}"
    "{%- for message in messages -%}"
    "{{- 'USER: ' if message['role'] == 'user' else 'ASSISTANT: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'image') -%}"
    "{{- '<image>\n' -}}{%- endfor -%}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'text') -%}"
    "{{- content['text'] -}}{%- if not loop.last %} {% endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{{- ' ' if message['role'] == 'user' else '</s>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def chat_template(name: str, *, with_bos: bool = False) -> str | None:
    """The Jinja source for `name`; None means the processor's own (`hf`).

    `with_bos` for vLLM: its chat completions tokenise the rendered text without special tokens (the
    template is expected to write BOS), whereas training and the builtin server let the tokenizer add it;
    both then give the model the same ids.
    """
    if name not in PROMPT_TEMPLATES:
        raise ValueError(f"prompt template {name!r}: expected one of {', '.join(PROMPT_TEMPLATES)}")
    if name != "llava_v1":
        return None
    return "{{- bos_token -}}" + LLAVA_V1_CHAT_TEMPLATE if with_bos else LLAVA_V1_CHAT_TEMPLATE


def render_prompt(processor: Any, messages: list[dict[str, Any]], name: str) -> str:
    """The text a model is asked to continue: the conversation so far and the assistant's cue."""
    return processor.apply_chat_template(
        messages, chat_template=chat_template(name), add_generation_prompt=True, tokenize=False
    )


def render_conversation(
    processor: Any, messages: list[dict[str, Any]], answer: str, name: str
) -> tuple[str, str]:
    """(prompt, prompt + target): the target is the assistant's turn after the cue, ending with eos.

    llava_v1 closes the turn with `</s>` itself; llava-hf's template renders `ASSISTANT: answer ` (a
    trailing space, no eos), so the space is dropped and eos added: the model must learn to stop.
    """
    prompt = render_prompt(processor, messages, name)
    full = processor.apply_chat_template(
        [*messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        chat_template=chat_template(name),
        tokenize=False,
    )
    if not full.startswith(prompt):
        full = f"{prompt} {answer}"
    full = full.rstrip()
    eos = processor.tokenizer.eos_token
    return prompt, full if full.endswith(eos) else full + eos
