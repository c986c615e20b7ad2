"""Every bad request answers 4xx (or 503 when full) with OpenAI's error JSON naming the problem,
never a 500 or a hang; the server keeps answering afterwards."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest
import torch

import vlmkit
from tests.serve._live import data_uri, image_part, live_server, png_bytes
from vlmkit.serve import ServeSettings, create_app

MAX_PIXELS = 100 * 100
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmkit.build("mgm-tiny").eval()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "ok.png").write_bytes(png_bytes())
    (outside / "secret.png").write_bytes(png_bytes())
    os.symlink(outside / "secret.png", allowed / "link.png")
    os.symlink(outside, allowed / "linkdir")
    return allowed, outside


@pytest.fixture(scope="module")
def url(model, dirs):
    settings = ServeSettings(
        model_id="mgm-tiny",
        allow_dirs=(dirs[0],),
        max_image_pixels=MAX_PIXELS,
        max_request_bytes=MAX_BYTES,
        max_wait_ms=1,
    )
    with live_server(create_app(model, settings)) as base:
        yield base


def _post(base, body, **kwargs):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        base + "/v1/chat/completions",
        content=content,
        timeout=60,
        headers={"content-type": "application/json"},
        **kwargs,
    )


def _user(content):
    return {
        "model": "mgm-tiny",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": content}],
    }


def _error(response, status, *words):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]
    return error


def test_malformed_json(url):
    _error(_post(url, b'{"model": "mgm-tiny", "messages": ['), 400, "not valid JSON")
    _error(_post(url, b"[1, 2]"), 400, "JSON object")
    _error(_post(url, b"\xff\xfe"), 400, "not valid JSON")


def test_unknown_fields(url):
    error = _error(_post(url, {**_user("hi"), "temprature": 0.5}), 400, "temprature")
    assert error["param"] == "temprature" and error["code"] == "unknown_parameter"
    body = _user("hi")
    body["messages"][0]["images"] = []
    _error(_post(url, body), 400, "messages[0]", "images")
    _error(
        _post(url, _user([{"type": "text", "text": "a", "extra": 1}])),
        400,
        "messages[0].content[0]",
    )


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("n", 2, ["n=2", "not supported"]),
        ("tools", [{"type": "function"}], ["tools"]),
        ("logprobs", True, ["logprobs"]),
        ("temperature", 3, ["temperature", "0 to 2"]),
        ("temperature", "hot", ["temperature"]),
        ("top_p", 0, ["top_p"]),
        ("max_tokens", 0, ["max_tokens", "positive"]),
        ("stop", [""], ["stop"]),
        ("seed", -1, ["seed"]),
        ("stream", "yes", ["stream"]),
    ],
)
def test_unsupported_or_out_of_range_values(url, field, value, words):
    error = _error(_post(url, {**_user("hi"), field: value}), 400, *words)
    assert error["param"] == field


def test_unknown_model_and_missing_fields(url):
    _error(_post(url, {**_user("hi"), "model": "gpt-4o"}), 404, "gpt-4o", "mgm-tiny")
    _error(
        _post(url, {"messages": [{"role": "user", "content": "hi"}]}), 400, "'model' is required"
    )
    _error(_post(url, {"model": "mgm-tiny", "messages": []}), 400, "messages")


@pytest.mark.parametrize(
    "messages, words",
    [
        ([{"role": "tool", "content": "x"}], ['role "tool"']),
        ([{"role": "assistant", "content": "x"}], ["messages[0]", "expected 'user'"]),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            ["last message"],
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            ["messages[1]", "system"],
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            ["messages[1]", "expected 'assistant'"],
        ),
    ],
)
def test_wrong_roles(url, messages, words):
    error = _error(_post(url, {"model": "mgm-tiny", "messages": messages}), 400, *words)
    assert error["code"] == "invalid_role"


def test_image_in_an_assistant_message(url):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [image_part(data_uri(png_bytes()))]},
        {"role": "user", "content": "b"},
    ]
    _error(
        _post(url, {"model": "mgm-tiny", "messages": messages}),
        400,
        "only user messages",
        "assistant",
    )


def test_more_images_than_image_slots(url):
    png = data_uri(png_bytes())
    content = [{"type": "text", "text": "<image>\ncompare"}, image_part(png), image_part(png)]
    error = _error(_post(url, _user(content)), 400, "1 <image> slot(s) but 2 image(s)")
    assert error["code"] == "image_count_mismatch"
    _error(_post(url, _user("<image>\nno image here")), 400, "1 <image> slot(s) but 0 image(s)")


def test_undecodable_images(url):
    _error(
        _post(url, _user([image_part(data_uri(b"this is not a png"))])), 400, "cannot be decoded"
    )
    _error(_post(url, _user([image_part("data:image/png;base64,@@@")])), 400, "base64")
    _error(_post(url, _user([image_part("data:image/png,rawbytes")])), 400, "data:image/png;base64")
    truncated = png_bytes(60, 60)[:-40]
    _error(_post(url, _user([image_part(data_uri(truncated))])), 400, "content[0]")


def test_oversized_image_and_request(url):
    big = data_uri(png_bytes(120, 100))  # 12,000 pixels > 10,000, a small file
    error = _error(_post(url, _user([image_part(big)])), 413, "120x100", "--max-image-pixels")
    assert error["param"] == "messages[0].content[0].image_url.url"
    _error(_post(url, _user("x" * (MAX_BYTES + 10))), 413, "--max-request-bytes")


def test_prompt_past_the_context_length(url):
    error = _error(_post(url, _user("y" * 1100)), 400, "maximum context length is 1024")
    assert error["code"] == "context_length_exceeded"
    _error(_post(url, {**_user("hi"), "max_tokens": 5000}), 400, "5000 in the completion")


def test_paths_outside_the_allowed_directory(url, dirs):
    allowed, outside = dirs
    cases = [
        str(outside / "secret.png"),
        str(allowed / ".." / "outside" / "secret.png"),
        str(allowed / "link.png"),
        str(allowed / "linkdir" / "secret.png"),
        (outside / "secret.png").as_uri(),
        "/etc/passwd",
    ]
    for path in cases:
        error = _error(
            _post(url, _user([image_part(path)])), 403, "outside the allowed directories"
        )
        assert error["code"] == "path_not_allowed"
    _error(_post(url, _user([image_part(str(allowed / "missing.png"))])), 400, "no such image file")
    ok = _post(url, _user([image_part(str(allowed / "ok.png"))]))
    assert ok.status_code == 200, ok.text


def test_no_paths_without_allow_dir_and_no_network(model, dirs):
    settings = ServeSettings(model_id="mgm-tiny")
    with live_server(create_app(model, settings)) as base:
        _error(_post(base, _user([image_part(str(dirs[0] / "ok.png"))])), 403, "--allow-dir")
        _error(_post(base, _user([image_part("https://example.com/cat.png")])), 400, "not fetched")
        _error(_post(base, _user([image_part("ftp://example.com/cat.png")])), 400, "not fetched")


def test_unknown_route_and_method(url):
    _error(httpx.get(url + "/v1/completions"), 404, "/v1/completions")
    _error(httpx.get(url + "/v1/chat/completions"), 405, "GET")


def test_full_queue_answers_503_with_retry_after(model):
    # The first request waits 3 s for company (--max-wait-ms), so the queue of 2 fills up.
    settings = ServeSettings(model_id="mgm-tiny", max_queue=2, max_batch=8, max_wait_ms=3000)
    with live_server(create_app(model, settings)) as base:
        with httpx.Client(timeout=60) as client:
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                waiting = [
                    pool.submit(client.post, base + "/v1/chat/completions", json=_user("hi"))
                    for _ in range(2)
                ]
                deadline = time.monotonic() + 10
                while (
                    httpx.get(base + "/health").json()["queued"] < 2 and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
                full = client.post(base + "/v1/chat/completions", json=_user("hi"))
                assert [f.result().status_code for f in waiting] == [200, 200]
        error = _error(full, 503, "--max-queue")
        assert full.headers["retry-after"] == "1" and error["code"] == "queue_full"


def test_a_client_that_disconnects_frees_its_slot(model):
    settings = ServeSettings(model_id="mgm-tiny", max_queue=1, max_batch=8, max_wait_ms=4000)
    with live_server(create_app(model, settings)) as base:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base + "/v1/chat/completions", json=_user("hi"), timeout=0.5)
        deadline = time.monotonic() + 3  # well before the 4 s the request would have waited
        while httpx.get(base + "/health").json()["queued"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(base + "/health").json()["queued"] == 0
        assert (
            httpx.post(base + "/v1/chat/completions", json=_user("hi"), timeout=60).status_code
            == 200
        )


def test_the_server_still_answers(url):
    response = _post(url, _user("hello"))
    assert (
        response.status_code == 200
        and response.json()["choices"][0]["message"]["role"] == "assistant"
    )
