"""A live uvicorn on 127.0.0.1 (a free port the OS picks) around an app, for the API tests.

The server runs in a thread of the test process and is told to exit when the ``with`` block ends;
start and stop are bounded, so a broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from typing import Any, Iterator

from PIL import Image, ImageDraw


@contextlib.contextmanager
def live_server(app: Any, timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app``; yields its base URL ``http://127.0.0.1:PORT``."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def png_bytes(width: int = 40, height: int = 32, color: str = "red") -> bytes:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).rectangle((4, 4, width - 4, height - 4), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}
