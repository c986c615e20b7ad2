"""``vlmkit bench serve``: a bounded load test of the API on 127.0.0.1.

The model is served in this process on a free loopback port twice: first with ``--max-batch 1``,
the requests sent one at a time (the baseline), then with batching, the same requests sent by
``--clients`` concurrent clients. Each phase sends a fixed number of requests and ends by itself.
Reported: requests sent / answered / failed, p50 and p95 latency, throughput of both phases and
their ratio, and the mean batch size the server formed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import statistics
import threading
import time
from typing import Any, Iterator

import click


@contextlib.contextmanager
def _serving(app: Any, timeout: float = 60.0) -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise click.ClickException("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def _requests(n: int, max_tokens: int, model_id: str) -> list[dict[str, Any]]:
    from PIL import Image, ImageDraw

    bodies = []
    for i in range(n):
        image = Image.new("RGB", (64, 48), "white")
        ImageDraw.Draw(image).rectangle(
            (8 + i % 16, 8, 40, 40), fill=("red", "green", "blue")[i % 3]
        )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        bodies.append(
            {
                "model": model_id,
                "temperature": 0,
                "max_tokens": max_tokens,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": url}},
                            {"type": "text", "text": f"Describe picture {i}."},
                        ],
                    }
                ],
            }
        )
    return bodies


async def _load(
    url: str, bodies: list[dict[str, Any]], clients: int, timeout: float
) -> dict[str, Any]:
    import httpx

    pending = list(enumerate(bodies))
    latencies: list[float] = []
    failures: list[str] = []
    tokens = 0

    async def client(http: Any) -> None:
        nonlocal tokens
        while pending:
            _, body = pending.pop(0)
            start = time.perf_counter()
            try:
                response = await http.post(url + "/v1/chat/completions", json=body)
            except httpx.HTTPError as err:
                failures.append(f"{type(err).__name__}: {err}")
                continue
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
                tokens += response.json()["usage"]["completion_tokens"]
            else:
                failures.append(f"{response.status_code}: {response.text[:200]}")

    start = time.perf_counter()
    async with httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=clients)
    ) as http:
        await asyncio.gather(*[client(http) for _ in range(clients)])
    wall = time.perf_counter() - start
    return {
        "sent": len(bodies),
        "answered": len(latencies),
        "failed": len(failures),
        "failures": failures[:5],
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "tokens_per_s": tokens / wall,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": _percentile(latencies, 95),
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@click.command("serve")
@click.argument("model_spec", metavar="[MODEL]", default="mgm-tiny")
@click.option("--clients", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option(
    "--requests", "n_requests", type=click.IntRange(1, 10_000), default=64, show_default=True
)
@click.option("--max-tokens", type=click.IntRange(1), default=32, show_default=True)
@click.option("--max-batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--max-wait-ms", type=click.FloatRange(0), default=20.0, show_default=True)
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Per request, seconds."
)
@click.option("--json", "json_path", default=None, help="Also write the figures to this file.")
def bench_serve_command(
    model_spec: str,
    clients: int,
    n_requests: int,
    max_tokens: int,
    max_batch: int,
    max_wait_ms: float,
    timeout: float,
    json_path: str | None,
) -> None:
    """Load-test `vlmkit serve` on 127.0.0.1: one at a time, then CLIENTS at once."""
    import torch

    from vlmkit.serve._app import ServeSettings, create_app
    from vlmkit.serve._model import load_served_model, model_id

    torch.manual_seed(0)
    model = load_served_model(model_spec)
    name = model_id(model, model_spec)
    bodies = _requests(n_requests, max_tokens, name)
    results: dict[str, Any] = {
        "model": name,
        "clients": clients,
        "requests": n_requests,
        "max_tokens": max_tokens,
        "max_batch": max_batch,
        "torch_threads": torch.get_num_threads(),
    }
    for phase, batch, concurrency in (("one_at_a_time", 1, 1), ("batched", max_batch, clients)):
        settings = ServeSettings(
            model_id=name,
            max_batch=batch,
            max_wait_ms=max_wait_ms if batch > 1 else 0,
            max_queue=max(n_requests, 1),
        )
        app = create_app(model, settings)
        with _serving(app) as url:
            results[phase] = asyncio.run(_load(url, bodies, concurrency, timeout))
        sizes = app.state.engine.batches
        results[phase]["mean_batch"] = sum(sizes) / len(sizes) if sizes else 0.0
    one, many = results["one_at_a_time"], results["batched"]
    results["speedup"] = (
        many["requests_per_s"] / one["requests_per_s"] if one["requests_per_s"] else None
    )
    click.echo(f"{name}: {n_requests} requests, {max_tokens} new tokens max, 1 image each")
    click.echo(
        f"{'':<14}{'sent':>6}{'answered':>10}{'failed':>8}{'p50 s':>8}{'p95 s':>8}{'req/s':>8}"
        f"{'tok/s':>8}{'batch':>7}"
    )
    for phase, label in (("one_at_a_time", "1 at a time"), ("batched", f"{clients} clients")):
        r = results[phase]
        click.echo(
            f"{label:<14}{r['sent']:>6}{r['answered']:>10}{r['failed']:>8}{_f(r['p50_s']):>8}"
            f"{_f(r['p95_s']):>8}{r['requests_per_s']:>8.2f}{r['tokens_per_s']:>8.1f}"
            f"{r['mean_batch']:>7.1f}"
        )
        for failure in r["failures"]:
            click.echo(f"  failed: {failure}")
    if results["speedup"] is not None:
        click.echo(f"throughput with batching: {results['speedup']:.1f}x one at a time")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
