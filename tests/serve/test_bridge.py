"""Image generation through the API: when the reply holds an ``<h>...</h>`` prompt and the model
has a bridge, the rendered image comes back in the message as an ``image_url`` part with a PNG
``data:`` URI (``message.images``), streamed or not.

``mgm-tiny`` is trained here for a few dozen steps to answer one ``<GEN>`` request with
``<h>a red square</h>``; the diffusers plugin's tiny random SDXL pipeline renders it.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
import torch
from PIL import Image

import vlmkit
from tests.serve._live import data_uri, image_part, live_server, png_bytes
from vlmkit.data.conversation import append_generation_request, build_example
from vlmkit.serve import ServeSettings, create_app

REQUEST = "Draw a red square."


@pytest.fixture(scope="module")
def red_png():
    return png_bytes(96, 80, "red")


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    from vlmkit_diffusers.tiny import random_sdxl_pipeline

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sdxl")
    random_sdxl_pipeline().save_pretrained(path)
    return vlmkit.create("bridge", "diffusers", pretrained=str(path), steps=2, size=32)


@pytest.fixture(scope="module")
def trained(red_png):
    torch.manual_seed(0)
    model = vlmkit.build("mgm-tiny")
    messages = append_generation_request([{"role": "user", "content": "<image>\n" + REQUEST}])
    example = build_example(
        [*messages, {"role": "assistant", "content": "<h>a red square</h>"}],
        model.llm.tokenizer,
        model.config.chat_template,
    )
    image = Image.open(io.BytesIO(red_png)).convert("RGB")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(300):
        loss = model(
            example["input_ids"][None], labels=example["labels"][None], images=[image]
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05
    return model.eval()


def _png(url):
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_generated_image_comes_back_as_a_data_uri(trained, bridge, red_png):
    app = create_app(trained, ServeSettings(model_id="mgm-tiny"), bridge=bridge)
    expected = np.asarray(bridge("a red square", seed=0)[0])
    messages = [
        {
            "role": "user",
            "content": [
                image_part(data_uri(red_png)),
                {"type": "text", "text": REQUEST + " <GEN>"},
            ],
        }
    ]
    with live_server(app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        answer = client.chat.completions.create(
            model="mgm-tiny", messages=messages, temperature=0, seed=0, max_tokens=32
        )
        message = answer.choices[0].message
        assert message.content == "<h>a red square</h>"
        [part] = message.model_extra["images"]
        assert part["type"] == "image_url"
        assert np.array_equal(_png(part["image_url"]["url"]), expected)

        chunks = list(
            client.chat.completions.create(
                model="mgm-tiny",
                messages=messages,
                temperature=0,
                seed=0,
                max_tokens=32,
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        streamed = [c.choices[0].delta.model_extra.get("images") for c in chunks]
        streamed = [images for images in streamed if images]
        assert text == "<h>a red square</h>"
        assert len(streamed) == 1 and np.array_equal(
            _png(streamed[0][0]["image_url"]["url"]), expected
        )

        plain = client.chat.completions.create(
            model="mgm-tiny",
            temperature=0,
            max_tokens=8,
            messages=[{"role": "user", "content": "hello"}],
        )
        assert "images" not in (plain.choices[0].message.model_extra or {})
