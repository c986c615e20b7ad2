"""``vlmkit serve MODEL`` as a user starts it: a subprocess on 127.0.0.1 that answers the
``openai`` client, and on Ctrl-C finishes the request it holds before exiting."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_answers_and_finishes_in_flight_requests_on_shutdown():
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlmkit",
            "serve",
            "mgm-tiny",
            "--port",
            str(port),
            "--max-wait-ms",
            "1500",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "vlmkit serve did not start"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["mgm-tiny"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                client.chat.completions.create,
                model="mgm-tiny",
                max_tokens=4,
                messages=[{"role": "user", "content": "hi"}],
            )
            deadline = time.monotonic() + 10
            while httpx.get(base + "/health").json()["queued"] == 0:  # it waits 1.5 s for company
                assert time.monotonic() < deadline, "the request never reached the queue"
                time.sleep(0.02)
            process.send_signal(signal.SIGINT)
            answer = pending.result(timeout=60)
        assert answer.usage.completion_tokens == 4
        assert process.wait(timeout=60) == 0
        assert f"mgm-tiny on http://127.0.0.1:{port}/v1" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_serve_command_refuses_an_unknown_model():
    result = subprocess.run(
        [sys.executable, "-m", "vlmkit", "serve", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "MODEL no-such-model: not a preset" in result.stderr


def test_web_command_serves_the_page_and_stops_on_ctrl_c():
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vlmkit", "web", "mgm-tiny", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                if page.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "vlmkit web did not start"
            time.sleep(0.2)
        assert "vlmkit · mgm-tiny" in page.text
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert f"mgm-tiny on http://127.0.0.1:{port}" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
