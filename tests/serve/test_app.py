"""The API through the real ``openai`` client against a live uvicorn serving ``mgm-tiny``.

Replies of the untrained model are noise, so each answer is checked against the library's own
:meth:`~vlmkit.model.VisionLanguageModel.chat` on the same messages (greedy): the server must say
exactly what the model says, streamed or not, alone or in a batch.
"""

from __future__ import annotations

import asyncio
import io

import openai  # noqa: E402
import pytest
import torch
from PIL import Image

import vlmkit
from tests.serve._live import data_uri, image_part, live_server, png_bytes
from vlmkit.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmkit.build("mgm-tiny").eval()


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    settings = ServeSettings(
        model_id="mgm-tiny", allow_dirs=(allowed,), max_batch=4, max_wait_ms=200
    )
    app = create_app(model, settings)
    with live_server(app) as url:
        yield url, app, allowed


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def _reference(model, text, image_bytes=None, max_tokens=12):
    images = [Image.open(io.BytesIO(image_bytes)).convert("RGB")] if image_bytes else None
    content = ("<image>\n" if image_bytes else "") + text
    return model.chat(images, [{"role": "user", "content": content}], max_new_tokens=max_tokens)


def test_models_and_health(client, server):
    import httpx

    assert [m.id for m in client.models.list()] == ["mgm-tiny"]
    health = httpx.get(server[0] + "/health").json()
    assert health["status"] == "ok" and health["model"] == "mgm-tiny"


def test_text_and_image_answer_equals_model_chat(client, model):
    png = png_bytes()
    response = client.chat.completions.create(
        model="mgm-tiny",
        temperature=0,
        max_tokens=12,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is this?"}, image_part(data_uri(png))],
            }
        ],
    )
    choice = response.choices[0]
    # The image part comes after the text; the server puts <image> where the part is.
    images = [Image.open(io.BytesIO(png)).convert("RGB")]
    expected = model.chat(
        images, [{"role": "user", "content": "What is this?\n<image>"}], max_new_tokens=12
    )
    assert choice.message.role == "assistant"
    assert choice.message.content == expected
    assert choice.finish_reason in ("stop", "length")
    assert response.object == "chat.completion" and response.model == "mgm-tiny"
    assert response.usage.prompt_tokens > model.num_visual_tokens
    assert (
        response.usage.total_tokens
        == response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_streamed_answer_equals_unstreamed(client, model):
    messages = [{"role": "user", "content": "Tell me a story."}]
    plain = client.chat.completions.create(
        model="mgm-tiny", messages=messages, temperature=0, max_tokens=16
    )
    stream = client.chat.completions.create(
        model="mgm-tiny",
        messages=messages,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert (
        "".join(deltas)
        == plain.choices[0].message.content
        == _reference(model, "Tell me a story.", max_tokens=16)
    )
    assert len(deltas) > 1  # token by token, not one piece at the end
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_max_tokens_and_stop(client):
    long = client.chat.completions.create(
        model="mgm-tiny", temperature=0, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert long.usage.completion_tokens == 5 and long.choices[0].finish_reason == "length"
    full = (
        client.chat.completions.create(
            model="mgm-tiny",
            temperature=0,
            max_tokens=24,
            messages=[{"role": "user", "content": "hi"}],
        )
        .choices[0]
        .message.content
    )
    start = next(
        i
        for i in range(2, len(full) - 2)
        if "\ufffd" not in full[i : i + 2] and full[i : i + 2].strip()
    )
    stop = full[start : start + 2]
    cut = client.chat.completions.create(
        model="mgm-tiny",
        temperature=0,
        max_tokens=24,
        stop=[stop],
        messages=[{"role": "user", "content": "hi"}],
    )
    assert cut.choices[0].finish_reason == "stop", (full, stop, cut.choices[0].message.content)
    assert cut.choices[0].message.content == full[: full.index(stop)].rstrip()
    chunks = list(
        client.chat.completions.create(
            model="mgm-tiny",
            temperature=0,
            max_tokens=24,
            stop=[stop],
            stream=True,
            messages=[{"role": "user", "content": "hi"}],
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == cut.choices[0].message.content  # nothing of the stop string leaked out
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]


def test_seed_makes_sampling_repeatable(client):
    def ask(seed):
        return (
            client.chat.completions.create(
                model="mgm-tiny",
                temperature=1.0,
                top_p=0.9,
                seed=seed,
                max_tokens=16,
                messages=[{"role": "user", "content": "Say something."}],
            )
            .choices[0]
            .message.content
        )

    assert ask(7) == ask(7)
    assert len({ask(s) for s in (1, 2, 3)}) > 1


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, model):
    url, app, _ = server
    prompts = [f"Question number {i}?" for i in range(4)]
    expected = [_reference(model, p, max_tokens=10) for p in prompts]
    app.state.engine.batches.clear()

    async def main():
        client = openai.AsyncOpenAI(
            base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120
        )
        answers = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="mgm-tiny",
                    temperature=0,
                    max_tokens=10,
                    messages=[{"role": "user", "content": p}],
                )
                for p in prompts
            ]
        )
        await client.close()
        return [a.choices[0].message.content for a in answers]

    assert asyncio.run(main()) == expected
    assert max(app.state.engine.batches) > 1


def test_image_from_an_allowed_directory(client, server, model):
    png = png_bytes(color="blue")
    path = server[2] / "blue.png"
    path.write_bytes(png)
    for url in (str(path), path.as_uri()):
        answer = client.chat.completions.create(
            model="mgm-tiny",
            temperature=0,
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [image_part(url), {"type": "text", "text": "Describe."}],
                }
            ],
        )
        assert answer.choices[0].message.content == _reference(
            model, "Describe.", png, max_tokens=8
        )


def test_two_images_are_labelled_as_model_chat_labels_them(client, model):
    red, blue = png_bytes(color="red"), png_bytes(color="blue")
    response = client.chat.completions.create(
        model="mgm-tiny",
        temperature=0,
        max_tokens=10,
        messages=[
            {
                "role": "user",
                "content": [
                    image_part(data_uri(red)),
                    image_part(data_uri(blue)),
                    {"type": "text", "text": "Which is red?"},
                ],
            }
        ],
    )
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in (red, blue)]
    expected = model.chat(
        images, [{"role": "user", "content": "<image>\n<image>\nWhich is red?"}], max_new_tokens=10
    )
    assert response.choices[0].message.content == expected
    # The prompt holds MGM's labels ("Image 1:<image>"): more tokens than the unlabelled prompt.
    from vlmkit._prompt import chat_prompt_ids
    from vlmkit.data.conversation import get_template

    messages = [{"role": "user", "content": "<image>\n<image>\nWhich is red?"}]
    template = get_template(model.config.chat_template)
    labelled = chat_prompt_ids(
        messages, model.llm.tokenizer, template, image_label="Image {index}:"
    )
    plain = chat_prompt_ids(messages, model.llm.tokenizer, template)
    assert len(labelled) > len(plain)
    assert response.usage.prompt_tokens == len(labelled) - 2 + 2 * model.num_visual_tokens
