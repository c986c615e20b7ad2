"""The FastAPI application: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

Requests and answers follow OpenAI's chat-completions format; a streamed answer is server-sent
events of ``chat.completion.chunk`` objects ending with ``data: [DONE]``. An image the model's
bridge renders from an ``<h>...</h>`` prompt in the reply comes back in the message as
``"images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]`` (in a
stream: in the ``delta`` of the chunk before the last). Every refused request gets a 4xx (or 503)
with ``{"error": {"message", "type", "param", "code"}}``.
"""

import asyncio
import base64
import contextlib
import io
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from vlmkit.serve._engine import Engine, Job
from vlmkit.serve._errors import APIError
from vlmkit.serve._images import open_image_url
from vlmkit.serve._protocol import ChatRequest, parse_body, parse_request


@dataclass
class ServeSettings:
    """Limits and options of one server (the ``vlmkit serve`` options)."""

    model_id: str
    allow_dirs: tuple[Path, ...] = ()
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_tokens: int = 256
    max_image_pixels: int = 4096 * 4096
    max_request_bytes: int = 20 * 1024 * 1024


def create_app(model: Any, settings: ServeSettings, *, bridge: Any = None) -> Any:
    """A FastAPI app serving ``model``; the batching worker starts now and stops at app shutdown
    after finishing the requests it holds."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    engine = Engine(
        model,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        bridge=bridge,
    )
    allow_dirs = tuple(Path(d).expanduser().resolve() for d in settings.allow_dirs)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(
        title="vlmkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.engine = engine

    def error_response(err: APIError) -> Any:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Any, err: APIError) -> Any:
        return error_response(err)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Any, err: Any) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return error_response(
            APIError(
                err.status_code, f"{request.method} {request.url.path}: {err.detail}", code=code
            )
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Any, err: Any) -> Any:
        return error_response(APIError(400, str(err)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Any, err: Exception) -> Any:  # still OpenAI's shape, never HTML
        return error_response(
            APIError(500, f"internal error: {type(err).__name__}: {err}", type="server_error")
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_id, "queued": engine.queued()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": settings.model_id,
                    "object": "model",
                    "created": created,
                    "owned_by": "vlmkit",
                }
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await _read_body(request, settings.max_request_bytes)
        data = parse_body(body)

        def open_image(url: str, param: str) -> Any:
            return open_image_url(
                url,
                allow_dirs=allow_dirs,
                max_pixels=settings.max_image_pixels,
                max_bytes=settings.max_request_bytes,
                param=param,
            )

        chat = await asyncio.to_thread(parse_request, data, open_image)
        if chat.model != settings.model_id:
            raise APIError(
                404,
                f"The model `{chat.model}` does not exist; this server serves "
                f"`{settings.model_id}`",
                param="model",
                code="model_not_found",
            )
        try:
            job = _job(engine, chat, settings)
        except ValueError as err:  # the chat template refuses the conversation
            raise APIError(400, str(err), param="messages") from None
        engine.submit(job)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            return StreamingResponse(
                _stream(engine, job, chat, completion_id, settings.model_id),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await _complete(engine, job, request, completion_id, settings.model_id)

    return app


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(
            413,
            f"the request body has {declared} bytes, more than the {limit} allowed "
            "(--max-request-bytes)",
            code="request_too_large",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(
                413,
                f"the request body is larger than the {limit} bytes allowed (--max-request-bytes)",
                code="request_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _job(engine: Engine, chat: ChatRequest, settings: ServeSettings) -> Job:
    ids = engine.prompt_ids(chat.messages)
    image_tokens = len(chat.images) * engine.model.num_visual_tokens
    prompt_tokens = len(ids) - len(chat.images) + image_tokens
    room = engine.context_length - prompt_tokens
    if chat.max_tokens is None:
        if room < 1:
            raise _too_long(engine, prompt_tokens, 1)
        max_tokens = min(settings.max_tokens, room)
    else:
        max_tokens = chat.max_tokens
        if max_tokens > room:
            raise _too_long(engine, prompt_tokens, max_tokens)
    return Job(
        ids=ids,
        images=chat.images,
        max_tokens=max_tokens,
        temperature=chat.temperature,
        top_p=chat.top_p,
        stop=chat.stop,
        seed=chat.seed,
        loop=asyncio.get_running_loop(),
        prompt_tokens=prompt_tokens,
    )


def _too_long(engine: Engine, prompt: int, completion: int) -> APIError:
    return APIError(
        400,
        f"This model's maximum context length is {engine.context_length} tokens. "
        f"However, you requested {prompt + completion} tokens ({prompt} in the messages "
        f"including {engine.model.num_visual_tokens} per image, {completion} in the "
        "completion). Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def _usage(job: Job, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": job.prompt_tokens + completion_tokens,
    }


def image_parts(images: list[Any]) -> list[dict[str, Any]]:
    """PIL images as OpenAI ``image_url`` parts with PNG ``data:`` URIs."""
    parts = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


async def _complete(
    engine: Engine, job: Job, request: Any, completion_id: str, model_id: str
) -> Any:
    while True:
        try:
            event = await asyncio.wait_for(job.events.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                engine.cancel(job)
                return None
            continue
        if event[0] == "error":
            raise event[1]
        if event[0] == "done":
            _, text, finish_reason, completion_tokens, images = event
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if images:
                message["images"] = image_parts(images)
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_id,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": _usage(job, completion_tokens),
            }


async def _stream(
    engine: Engine, job: Job, chat: ChatRequest, completion_id: str, model_id: str
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_id,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        if chat.include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await job.events.get()
            if event[0] == "delta":
                yield chunk({"content": event[1]})
            elif event[0] == "error":
                yield f"data: {json.dumps(event[1].body())}\n\n"
                return
            else:
                _, _text, finish_reason, completion_tokens, images = event
                if images:
                    yield chunk({"images": image_parts(images)})
                yield chunk({}, finish_reason)
                if chat.include_usage:
                    body = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model_id,
                        "choices": [],
                        "usage": _usage(job, completion_tokens),
                    }
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
                return
    finally:  # the client went away (the generator is closed early) or the answer is complete
        engine.cancel(job)
