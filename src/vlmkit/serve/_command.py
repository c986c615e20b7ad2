"""``vlmkit serve MODEL``: the OpenAI-compatible HTTP API on uvicorn."""

from __future__ import annotations

import click

host_option = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on."
)
port_option = click.option(
    "--port", type=int, default=8000, show_default=True, help="Port to listen on."
)
device_option = click.option("--device", default=None, help="torch device (default: CPU).")


@click.command("serve")
@click.argument("model_spec", metavar="MODEL")
@host_option
@port_option
@device_option
@click.option(
    "--allow-dir",
    "allow_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Allow image paths below this directory (repeatable; none by default).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Most requests generated together.",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="How long the first request of a batch waits for others.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Most requests waiting; beyond it the answer is 503 with Retry-After.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Completion length when a request gives no max_tokens.",
)
@click.option("--max-image-pixels", type=click.IntRange(1), default=4096 * 4096, show_default=True)
@click.option(
    "--max-request-bytes", type=click.IntRange(1), default=20 * 1024 * 1024, show_default=True
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of random weights (presets)."
)
def serve_command(
    model_spec: str,
    host: str,
    port: int,
    device: str | None,
    allow_dirs: tuple[str, ...],
    max_batch: int,
    max_wait_ms: float,
    max_queue: int,
    max_tokens: int,
    max_image_pixels: int,
    max_request_bytes: int,
    seed: int,
) -> None:
    """Serve MODEL with OpenAI's chat-completions API (POST /v1/chat/completions)."""
    import torch
    import uvicorn

    from vlmkit.serve._app import ServeSettings, create_app
    from vlmkit.serve._model import load_served_model, model_id

    torch.manual_seed(seed)
    model = load_served_model(model_spec, device=device)
    settings = ServeSettings(
        model_id=model_id(model, model_spec),
        allow_dirs=tuple(allow_dirs),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_tokens=max_tokens,
        max_image_pixels=max_image_pixels,
        max_request_bytes=max_request_bytes,
    )
    app = create_app(model, settings, bridge=getattr(model, "bridge", None))
    click.echo(f"vlmkit serve: {settings.model_id} on http://{host}:{port}/v1")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
