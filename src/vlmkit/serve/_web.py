"""``vlmkit web MODEL``: a one-process Gradio chat page in front of the same batching engine as
``vlmkit serve``.

Image upload, multi-turn chat with streamed replies, stop and clear (Gradio's own buttons),
sliders for temperature, top-p and max tokens; the model's name, its visual tokens per image and
HD view count in the header; an image the model's bridge renders from an ``<h>`` prompt is shown
inline. A problem (an unreadable image, a prompt past the context length) appears in the page as
a reply titled "⚠ Error", which later turns leave out together with the message that caused it;
the server keeps running. Nothing reaches the network: analytics off, no
share link.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator

import click

from vlmkit.serve._command import device_option, host_option, port_option

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def build_page(model: Any, model_id: str, *, bridge: Any = None, max_batch: int = 8) -> Any:
    """The Gradio ``Blocks`` page chatting with ``model`` (launch it with ``.launch()``)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    from vlmkit.chat import ChatError, open_image
    from vlmkit.serve._app import ServeSettings, _job
    from vlmkit.serve._engine import Engine
    from vlmkit.serve._errors import APIError
    from vlmkit.serve._protocol import ChatRequest

    engine = Engine(model, max_batch=max_batch, max_wait_ms=5, bridge=bridge)
    settings = ServeSettings(model_id=model_id)

    async def respond(
        message: dict[str, Any],
        history: list[dict[str, Any]],
        temperature: float,
        top_p: float,
        max_tokens: float,
    ) -> AsyncIterator[Any]:
        try:
            messages, paths = _conversation(history, message)
            images = [open_image(p) for p in paths]
            chat = ChatRequest(
                model=model_id,
                messages=messages,
                images=images,
                temperature=float(temperature),
                top_p=max(float(top_p), 0.01),
                max_tokens=int(max_tokens),
            )
            job = _job(engine, chat, settings)
            engine.submit(job)
        except (ChatError, APIError) as err:
            yield gr.ChatMessage(content=str(err), metadata={"title": ERROR_TITLE})
            return
        text = ""
        try:
            while True:
                event = await job.events.get()
                if event[0] == "delta":
                    text += event[1]
                    yield text
                elif event[0] == "error":
                    yield gr.ChatMessage(content=event[1].message, metadata={"title": ERROR_TITLE})
                    return
                else:
                    rendered = event[4]
                    yield (
                        [event[1], *[gr.Image(value=image) for image in rendered]]
                        if rendered
                        else event[1]
                    )
                    return
        finally:  # Stop pressed, page closed, or done
            engine.cancel(job)

    views = model.num_views
    header = (
        f"**{model_id}** · {model.num_visual_tokens} visual tokens per image"
        + (f" ({views} HD views × {model.tokens_per_view})" if views > 1 else " (1 view)")
        + (" · images rendered by the model's bridge" if bridge is not None else "")
    )
    page = gr.ChatInterface(
        respond,
        multimodal=True,
        title=f"vlmkit · {model_id}",
        description=header,
        textbox=gr.MultimodalTextbox(
            file_types=["image"],
            file_count="multiple",
            placeholder="Ask about an image, or attach one",
            render=False,
        ),
        additional_inputs=[
            gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature", render=False),
            gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p", render=False),
            gr.Slider(1, 1024, value=128, step=1, label="Max tokens", render=False),
        ],
        additional_inputs_accordion=gr.Accordion("Sampling", open=True, render=False),
        analytics_enabled=False,
    )
    page.engine = engine
    return page


ERROR_TITLE = "⚠ Error"


def _conversation(
    history: list[dict[str, Any]], message: dict[str, Any]
) -> tuple[list[dict[str, str]], list[str]]:
    """Gradio's messages-format history plus the new message → vlmkit messages (``<image>`` where
    an uploaded file was) and the image paths in order. Images in assistant turns (rendered ones)
    are not sent back to the model, nor is a turn that ended in an error, nor its error message."""
    turns: list[dict[str, Any]] = []
    new = [
        {"type": "file", "file": {"path": p if isinstance(p, str) else p.get("path")}}
        for p in message.get("files", [])
    ]
    if message.get("text"):
        new.append({"type": "text", "text": message["text"]})
    for entry in [*history, {"role": "user", "content": new}]:
        role = entry.get("role")
        if role not in ("user", "assistant"):
            continue
        if role == "assistant" and (entry.get("metadata") or {}).get("title") == ERROR_TITLE:
            while turns and turns[-1]["role"] == "user":
                turns.pop()
            continue
        content = entry.get("content")
        parts = content if isinstance(content, list) else [content]
        pieces, paths = [], []
        for part in parts:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                pieces.append(part.get("text", ""))
            elif isinstance(part, dict) and part.get("type") == "file" and role == "user":
                paths.append(part["file"]["path"])
                pieces.append("<image>")
        text = "\n".join(p for p in pieces if p)
        if not text:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n" + text
            turns[-1]["paths"] += paths
        else:
            turns.append({"role": role, "content": text, "paths": paths})
    return (
        [{"role": t["role"], "content": t["content"]} for t in turns],
        [path for t in turns for path in t["paths"]],
    )


@click.command("web")
@click.argument("model_spec", metavar="MODEL")
@host_option
@port_option
@device_option
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of random weights (presets)."
)
def web_command(model_spec: str, host: str, port: int, device: str | None, seed: int) -> None:
    """Chat with MODEL in the browser: a Gradio page on http://HOST:PORT."""
    import torch

    from vlmkit.serve._model import load_served_model, model_id

    torch.manual_seed(seed)
    model = load_served_model(model_spec, device=device)
    page = build_page(model, model_id(model, model_spec), bridge=getattr(model, "bridge", None))
    click.echo(f"vlmkit web: {model_id(model, model_spec)} on http://{host}:{port}")
    try:
        page.queue().launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            show_error=True,
            quiet=True,
        )
    finally:
        page.engine.close()
