"""Checking an OpenAI chat-completions request and turning it into vlmkit's messages and images.

Strict where a silent misreading would surprise: a field that is not part of OpenAI's request is
refused by name, as are OpenAI features this server does not implement (``n`` above 1, tools,
logprobs, penalties) when set to anything but their defaults. Image parts become ``<image>``
placeholders at their place in the message; text that already holds ``<image>`` placeholders takes
the images in order, and their counts must agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from vlmkit.data.conversation import IMAGE_TOKEN
from vlmkit.serve._errors import APIError

# Fields of OpenAI's request that are accepted and have no effect on generation.
_IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "modalities"}
# Fields of OpenAI's request this server does not implement: accepted only at these defaults.
_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
}
_HANDLED = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "stream",
    "stream_options",
}
_ROLES = {"system", "developer", "user", "assistant"}


@dataclass
class ChatRequest:
    """A checked request: vlmkit messages (``<image>`` placeholders), their images, sampling."""

    model: str
    messages: list[dict[str, str]]
    images: list[Any] = field(default_factory=list)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``; 400 when it is not one."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(
            400, f"the request body is not valid JSON ({err})", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise APIError(
            400,
            f"the request body must be a JSON object, got {type(data).__name__}",
            code="invalid_json",
        )
    return data


def parse_request(data: dict[str, Any], open_image: Callable[[str, str], Any]) -> ChatRequest:
    """Check ``data`` (a decoded request body); ``open_image(url, param)`` reads one image URL."""
    for key in data:
        if key not in _HANDLED and key not in _IGNORED and key not in _DEFAULTS:
            raise APIError(
                400,
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )
    for key, allowed in _DEFAULTS.items():
        if key in data and data[key] not in allowed:
            raise APIError(
                400,
                f"{key}={json.dumps(data[key])} is not supported by this server "
                f"(allowed: {', '.join(json.dumps(a) for a in allowed)})",
                param=key,
                code="unsupported_parameter",
            )
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: the name GET /v1/models lists", param="model")
    request = ChatRequest(model=model, messages=[])
    request.temperature = _number(data, "temperature", 1.0, 0.0, 2.0)
    request.top_p = _number(data, "top_p", 1.0, 0.0, 1.0)
    if request.top_p == 0.0:
        raise APIError(400, "top_p must be greater than 0", param="top_p")
    for key in ("max_tokens", "max_completion_tokens"):
        if data.get(key) is not None:
            value = data[key]
            if not _is_int(value) or value < 1:
                raise APIError(
                    400, f"{key} must be a positive integer, got {json.dumps(value)}", param=key
                )
            request.max_tokens = value
    request.stop = _stop(data.get("stop"))
    seed = data.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
        raise APIError(
            400, f"seed must be a non-negative integer, got {json.dumps(seed)}", param="seed"
        )
    request.seed = seed
    stream = data.get("stream")
    if stream not in (None, True, False):
        raise APIError(400, "stream must be true or false", param="stream")
    request.stream = bool(stream)
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise APIError(
                400, 'stream_options must be {"include_usage": true|false}', param="stream_options"
            )
        request.include_usage = bool(options.get("include_usage"))
    request.messages, request.images = _messages(data.get("messages"), open_image)
    return request


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(data: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise APIError(
            400,
            f"{key} must be a number from {low:g} to {high:g}, got {json.dumps(value)}",
            param=key,
        )
    return float(value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > 4
    ):
        raise APIError(
            400, "stop must be a non-empty string or a list of up to 4 of them", param="stop"
        )
    return list(stops)


def _messages(
    value: Any, open_image: Callable[[str, str], Any]
) -> tuple[list[dict[str, str]], list[Any]]:
    if not isinstance(value, list) or not value:
        raise APIError(400, "'messages' must be a non-empty list of messages", param="messages")
    messages: list[dict[str, str]] = []
    images: list[Any] = []
    for i, message in enumerate(value):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise APIError(400, f"{param} must be an object with 'role' and 'content'", param=param)
        unknown = set(message) - {"role", "content", "name"}
        if unknown:
            raise APIError(
                400,
                f"{param}: unrecognized field(s) {', '.join(sorted(unknown))}",
                param=f"{param}.{sorted(unknown)[0]}",
                code="unknown_parameter",
            )
        role = message.get("role")
        if role not in _ROLES:
            raise APIError(
                400,
                f"{param}: role {json.dumps(role)} is not supported (system, user, assistant)",
                param=f"{param}.role",
                code="invalid_role",
            )
        role = "system" if role == "developer" else role
        text, message_images = _content(message.get("content"), role, param, open_image)
        messages.append({"role": role, "content": text})
        images.extend(message_images)
    _check_order(messages)
    slots = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    if slots != len(images):
        raise APIError(
            400,
            f"the messages have {slots} {IMAGE_TOKEN} slot(s) but {len(images)} "
            "image(s): write <image> once per image part, or not at all",
            param="messages",
            code="image_count_mismatch",
        )
    return messages, images


def _content(
    content: Any, role: str, param: str, open_image: Callable[[str, str], Any]
) -> tuple[str, list[Any]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise APIError(
            400, f"{param}.content must be a string or a list of parts", param=f"{param}.content"
        )
    pieces: list[tuple[str, bool]] = []  # (text, is image)
    images: list[Any] = []
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                raise APIError(
                    400, f'{where}: a text part is {{"type": "text", "text": "..."}}', param=where
                )
            pieces.append((part["text"], False))
        elif kind == "image_url":
            if role != "user":
                raise APIError(
                    400,
                    f"{where}: only user messages may carry images, not {role}",
                    param=where,
                    code="invalid_role",
                )
            url_obj = part.get("image_url")
            if (
                set(part) != {"type", "image_url"}
                or not isinstance(url_obj, dict)
                or not isinstance(url_obj.get("url"), str)
                or set(url_obj) - {"url", "detail"}
            ):
                raise APIError(
                    400,
                    f'{where}: an image part is {{"type": "image_url", "image_url": '
                    '{"url": "data:image/png;base64,..."}}',
                    param=where,
                )
            images.append(open_image(url_obj["url"], f"{where}.image_url.url"))
            pieces.append((IMAGE_TOKEN, True))
        else:
            raise APIError(
                400,
                f"{where}: part type {json.dumps(kind)} is not supported (text, image_url)",
                param=where,
            )
    typed_slots = sum(text.count(IMAGE_TOKEN) for text, is_image in pieces if not is_image)
    if typed_slots:  # the user placed the images: keep their placeholders, drop the parts' own
        return "\n".join(text for text, is_image in pieces if not is_image), images
    return "\n".join(text for text, _ in pieces), images


def _check_order(messages: list[dict[str, str]]) -> None:
    start = 1 if messages[0]["role"] == "system" else 0
    for i, message in enumerate(messages[start:], start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise APIError(
                400,
                f"messages[{i}] has role {message['role']!r}, expected {expected!r}: an "
                "optional leading system message, then user and assistant alternating",
                param=f"messages[{i}].role",
                code="invalid_role",
            )
    if messages[-1]["role"] != "user":
        raise APIError(
            400,
            "the last message must be the user's",
            param=f"messages[{len(messages) - 1}].role",
            code="invalid_role",
        )
