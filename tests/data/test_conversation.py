"""Chat templates: each MGM format's exact text, segments, labels, and the <GEN>/<h> protocol."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vlmkit.data.conversation import (
    CHAT_TEMPLATES,
    IGNORE_INDEX,
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    append_generation_request,
    build_example,
    extract_image_prompt,
    get_template,
    tokenize_with_images,
)

MGM_TEMPLATES = [
    "vicuna_v1", "gemma", "mistral_instruct", "llava_llama_2", "chatml_direct", "llama_3", "plain"
]  # fmt: skip
TEMPLATE_NAMES = [*MGM_TEMPLATES, "chatml", "smollm2"]

TWO_TURNS = [
    {"role": "user", "content": "<image>\nWhat is in the picture?"},
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "What colour is it?"},
]

# The text MGM's conversation formats give for TWO_TURNS, ready for the assistant's reply.
EXPECTED = {
    "vicuna_v1": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: <image>\n"
        "What is in the picture? ASSISTANT: A cat.</s>USER: What colour is it? ASSISTANT:"
    ),
    "gemma": (
        "<start_of_turn>user\n<image>\nWhat is in the picture?<end_of_turn>\n"
        "<start_of_turn>model\nA cat.<end_of_turn>\n<eos>"
        "<start_of_turn>user\nWhat colour is it?<end_of_turn>\n<start_of_turn>model\n"
    ),
    "mistral_instruct": (
        "[INST] <image>\nWhat is in the picture? [/INST] A cat. </s>"
        "<s>[INST] What colour is it? [/INST]"
    ),
    "llava_llama_2": (
        "[INST] <<SYS>>\nYou are a helpful language and vision assistant. You are able to "
        "understand the visual content that the user provides, and assist the user with a variety "
        "of tasks using natural language.\n<</SYS>>\n\n<image>\nWhat is in the picture? [/INST] "
        "A cat. </s><s>[INST] What colour is it? [/INST]"
    ),
    "chatml_direct": (
        "<|im_start|>system\nAnswer the questions.<|im_end|>"
        "<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>"
        "<|im_start|>assistant\nA cat.<|im_end|>"
        "<|im_start|>user\nWhat colour is it?<|im_end|><|im_start|>assistant\n"
    ),
    "llama_3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful language and vision "
        "assistant. You are able to understand the visual content that the user provides, and "
        "assist the user with a variety of tasks using natural language.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is in the picture?<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\nA cat.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat colour is it?<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\n"
    ),
    "chatml": (
        "<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\n"
    ),
    "smollm2": (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\n"
    ),
    # Pretraining format: a user turn keeps only its image; a turn without one keeps its text.
    "plain": "<image>A cat.\nWhat colour is it?",
}

SPECIAL_TOKENS = [
    "<s>", "</s>", "<pad>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<|im_start|>",
    "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE trained here on a few sentences, with the templates' special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "What is in the picture? A cat sitting on a mat.",
        "What colour is it? The cat is grey.",
        "USER: ASSISTANT: Answer the questions. user model system assistant",
        "Describe the image briefly. A dog runs in the park.",
    ]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[3:]})
    return fast


# ----------------------------------------------------------------------------- the templates
def test_the_mgm_templates_and_chatml_ones():
    assert set(MGM_TEMPLATES) < set(CHAT_TEMPLATES)
    assert sorted(CHAT_TEMPLATES) == sorted(TEMPLATE_NAMES)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_render_two_turns(name):
    assert get_template(name).render(TWO_TURNS) == EXPECTED[name]


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_render_without_generation_prompt_ends_after_the_conversation(name):
    template = get_template(name)
    full = TWO_TURNS + [{"role": "assistant", "content": "Grey."}]
    text = template.render(full, add_generation_prompt=False)
    assert text.startswith(template.render(TWO_TURNS))
    assert text.endswith(template.answer_format.format(content="Grey."))
    with pytest.raises(ValueError, match="last message to be a user turn"):
        template.render(full, add_generation_prompt=True)


def test_plain_is_image_then_caption():
    caption = [
        {"role": "user", "content": "<image>\nDescribe the image briefly."},
        {"role": "assistant", "content": "A dog runs in the park."},
    ]
    template = get_template("plain")
    text = template.render(caption, add_generation_prompt=False)
    assert text == "<image>A dog runs in the park.\n"
    assert template.render(caption[:1]) == "<image>"


@pytest.mark.parametrize(
    "name, expected_start",
    [
        ("vicuna_v1", "Be brief. USER: <image>\nWhat"),
        ("gemma", "<start_of_turn>user\nBe brief.\n\n<image>\nWhat"),
        ("mistral_instruct", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nWhat"),
        ("chatml_direct", "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\n<image>"),
        ("llama_3", "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_"),
    ],
)
def test_leading_system_message_overrides_the_system_text(name, expected_start):
    messages = [{"role": "system", "content": "Be brief."}] + TWO_TURNS
    text = get_template(name).render(messages)
    assert text.startswith(expected_start)
    assert text.count("Be brief.") == 1


def test_empty_system_message_drops_the_system_block():
    messages = [{"role": "system", "content": ""}] + TWO_TURNS
    assert get_template("vicuna_v1").render(messages).startswith("USER: <image>")
    assert get_template("chatml_direct").render(messages).startswith("<|im_start|>user\n")


@pytest.mark.parametrize(
    "name, stop",
    [
        ("vicuna_v1", "</s>"), ("gemma", "<end_of_turn>"), ("mistral_instruct", "</s>"),
        ("chatml_direct", "<|im_end|>"), ("llama_3", "<|eot_id|>"), ("plain", "\n"),
    ],
)
def test_stop_str(name, stop):
    assert get_template(name).stop_str == stop


def test_unknown_template_lists_valid_names():
    with pytest.raises(ValueError, match="unknown chat template 'vicuna'") as err:
        get_template("vicuna")
    for name in TEMPLATE_NAMES:
        assert name in str(err.value)


def test_templates_are_frozen_data():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_template("gemma").system = "changed"
    custom = dataclasses.replace(get_template("vicuna_v1"), name="mine", system="Be kind.")
    expected = "Be kind. USER: <image>\nWhat is in the picture? ASSISTANT:"
    assert custom.render(TWO_TURNS[:1]) == expected


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "no user message"),
        ([{"role": "system", "content": "x"}], "no user message"),
        ([{"role": "assistant", "content": "x"}], "message 0 has role 'assistant'"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "message 1 has role 'user'",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "message 1 has role 'system'",
        ),
        ([{"role": "user", "content": 3}], "str 'content'"),
    ],
)
def test_malformed_conversations_raise(messages, match):
    with pytest.raises(ValueError, match=match):
        get_template("vicuna_v1").render(messages)


# ----------------------------------------------------------------------------- segments
def test_vicuna_segments_supervise_answers_and_their_end_of_turn():
    full = TWO_TURNS + [{"role": "assistant", "content": "Grey."}]
    segments = get_template("vicuna_v1").segments(full)
    assert [s for s in segments if s[1]] == [(" A cat.</s>", True), (" Grey.</s>", True)]
    assert segments[2] == ("USER: What colour is it? ASSISTANT:", False)


_text = st.text(alphabet="ab <>\n", max_size=8).map(lambda s: s.replace("<>", "<image>"))


@st.composite
def conversations(draw):
    n_turns = draw(st.integers(1, 5))
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_text)})
    for i in range(n_turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": draw(_text)})
    return messages


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(TEMPLATE_NAMES), messages=conversations())
def test_segments_join_back_to_render(name, messages):
    template = get_template(name)
    segments = template.segments(messages)
    rendered = template.render(messages, add_generation_prompt=False)
    assert "".join(text for text, _ in segments) == rendered
    assert all(text for text, _ in segments)
    assert all(a[1] != b[1] for a, b in zip(segments, segments[1:]))  # neighbours differ


# ----------------------------------------------------------------------------- ids and labels
def test_tokenize_with_images_places_placeholders_and_one_bos(tokenizer):
    ids = tokenize_with_images("<image>\nhi <image> cat", tokenizer)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids[1] == IMAGE_TOKEN_INDEX and ids.count(IMAGE_TOKEN_INDEX) == 2
    pieces = [tokenizer.decode([t]) for t in ids[2:] if t != IMAGE_TOKEN_INDEX]
    assert "".join(pieces) == "\nhi  cat"
    ids = tokenize_with_images("a<image>", tokenizer, image_token_index=-7, add_bos=False)
    assert ids[-1] == -7
    assert tokenizer.bos_token_id not in tokenize_with_images("cat", tokenizer, add_bos=False)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_labels_supervise_only_the_answers(name, tokenizer):
    template = get_template(name)
    full = TWO_TURNS + [{"role": "assistant", "content": "The cat is grey."}]
    example = build_example(full, tokenizer, template)
    ids, labels = example["input_ids"], example["labels"]
    assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape and ids.dim() == 1

    text = template.render(full, add_generation_prompt=False)
    assert ids.tolist() == tokenize_with_images(text, tokenizer, add_bos=template.add_bos)

    is_image = ids == IMAGE_TOKEN_INDEX
    assert int(is_image.sum()) == 1 and (labels[is_image] == IGNORE_INDEX).all()
    supervised = labels != IGNORE_INDEX
    assert (labels[supervised] == ids[supervised]).all()
    answers = "".join(t for t, trained in template.segments(full) if trained)
    assert tokenizer.decode(ids[supervised].tolist()) == answers
    assert template.add_bos == (ids[0].item() == tokenizer.bos_token_id)
    if template.add_bos:
        assert labels[0] == IGNORE_INDEX


def test_labels_on_a_caption_mask_the_image_and_train_the_caption(tokenizer):
    caption = [
        {"role": "user", "content": "<image>\nDescribe the image briefly."},
        {"role": "assistant", "content": "A dog runs in the park."},
    ]
    example = build_example(caption, tokenizer, "plain")
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    assert ids[:2] == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert tokenizer.decode(labels[2:]) == "A dog runs in the park.\n"


def test_truncation_keeps_image_placeholders(tokenizer):
    full = TWO_TURNS + [{"role": "assistant", "content": "The cat is grey."}]
    whole = build_example(full, tokenizer, "vicuna_v1")
    length = whole["input_ids"].numel()
    short = build_example(full, tokenizer, "vicuna_v1", max_length=length - 3)
    assert torch.equal(short["input_ids"], whole["input_ids"][: length - 3])
    assert torch.equal(short["labels"], whole["labels"][: length - 3])
    roomy = build_example(full, tokenizer, "vicuna_v1", max_length=length + 5)
    assert roomy["input_ids"].numel() == length

    image_at = whole["input_ids"].tolist().index(IMAGE_TOKEN_INDEX)
    message = rf"{length} tokens.*max_length={image_at}.*position {image_at}"
    with pytest.raises(ValueError, match=message):
        build_example(full, tokenizer, "vicuna_v1", max_length=image_at)


def test_tokenizer_without_offsets_gives_the_same_labels(tokenizer):
    class NoOffsets:
        bos_token_id = tokenizer.bos_token_id

        def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
            if return_offsets_mapping:
                raise NotImplementedError
            return tokenizer(text, add_special_tokens=add_special_tokens)

    full = TWO_TURNS + [{"role": "assistant", "content": "The cat is grey."}]
    for name in ("vicuna_v1", "chatml_direct"):
        with_offsets = build_example(full, tokenizer, name)
        without = build_example(full, NoOffsets(), name)
        assert torch.equal(with_offsets["labels"], without["labels"])


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(TEMPLATE_NAMES), messages=conversations())
def test_build_example_ids_match_inference_tokenization(name, messages, tokenizer):
    template = get_template(name)
    example = build_example(messages, tokenizer, template)
    text = template.render(messages, add_generation_prompt=False)
    expected = tokenize_with_images(text, tokenizer, add_bos=template.add_bos)
    assert example["input_ids"].tolist() == expected
    assert int((example["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == text.count(IMAGE_TOKEN)
    assert (example["labels"][example["input_ids"] == IMAGE_TOKEN_INDEX] == IGNORE_INDEX).all()


# ----------------------------------------------------------------------------- <GEN> and <h>
def test_append_generation_request_tags_the_last_user_turn():
    messages = TWO_TURNS + [{"role": "assistant", "content": "Grey."}]
    out = append_generation_request(messages)
    assert out[2]["content"] == "What colour is it? <GEN>"
    assert out[0] == messages[0] and messages[2]["content"] == "What colour is it?"  # no mutation
    assert append_generation_request(out) == out
    with pytest.raises(ValueError, match="user message"):
        append_generation_request([{"role": "system", "content": "x"}])


@pytest.mark.parametrize(
    "text, prompt",
    [
        ("Sure. <h> a red fox in snow </h>", "a red fox in snow"),
        ("<h>first</h> and then <h>second one</h> done", "second one"),
        ("<h>a <h>b</h>", "b"),
        ("<h>kept</h> then a stray </h>", "kept"),
        ("<h>multi\nline</h>", "multi\nline"),
        ("no tags at all", None),
        ("<h>never closed", None),
        ("</h> backwards <h>", None),
        ("<h>  </h>", None),
    ],
)
def test_extract_image_prompt(text, prompt):
    assert extract_image_prompt(text) == prompt
