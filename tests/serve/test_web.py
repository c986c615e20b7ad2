"""``vlmkit web``: the Gradio page driven by a real browser (Debian's chromium, headless, through
Playwright): upload an image, send a message, watch the reply stream in, save a screenshot."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch

import vlmkit
from tests.serve._live import png_bytes
from vlmkit.serve._web import ERROR_TITLE, _conversation, build_page

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "serve-web.png"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_conversation_from_gradio_history():
    history = [
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"path": "/a.png"}},
                {"type": "text", "text": "hi"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": [{"type": "file", "file": {"path": "/rendered.png"}}]},
    ]
    messages, paths = _conversation(history, {"text": "and this?", "files": ["/b.png"]})
    assert messages == [
        {"role": "user", "content": "<image>\nhi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "<image>\nand this?"},
    ]
    assert paths == ["/a.png", "/b.png"]


def test_a_turn_that_failed_is_left_out():
    history = [
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"path": "/huge.png"}},
                {"type": "text", "text": "x"},
            ],
        },
        {"role": "assistant", "content": "too long", "metadata": {"title": ERROR_TITLE}},
    ]
    assert _conversation(history, {"text": "hi", "files": []}) == (
        [{"role": "user", "content": "hi"}],
        [],
    )


@pytest.fixture(scope="module")
def page_url():
    torch.manual_seed(0)
    model = vlmkit.build("mgm-tiny").eval()
    page = build_page(model, "mgm-tiny")
    port = _free_port()
    page.queue().launch(
        server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True, quiet=True
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        page.close()
        page.engine.close()


def test_browser_uploads_an_image_and_sees_the_streamed_reply(page_url, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (.ci/run installs it)"
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes(96, 80, "red"))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(page_url, timeout=60_000)
            page.get_by_text("64 visual tokens per image (1 view)").wait_for(timeout=30_000)
            # Record every distinct text the reply shows, to see it grow while streaming.
            page.evaluate("""() => {
                window.__seen = [];
                new MutationObserver(() => {
                    const bot = document.querySelector('[data-testid="bot"]');
                    const text = bot ? bot.innerText : '';
                    const last = window.__seen[window.__seen.length - 1];
                    if (text && last !== text) window.__seen.push(text);
                }).observe(document.body, {subtree: true, childList: true, characterData: true});
            }""")
            page.locator('input[type="file"]').first.set_input_files(str(image))
            box = page.get_by_placeholder("Ask about an image, or attach one")
            box.fill("What colour is the square?")
            box.press("Enter")
            page.locator('[data-testid="user"]').first.wait_for(timeout=30_000)
            bot = page.locator('[data-testid="bot"]').first
            bot.wait_for(timeout=60_000)
            deadline, last, stable_since = time.monotonic() + 60, None, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - stable_since < 2:
                text = bot.inner_text()
                if text != last:
                    last, stable_since = text, time.monotonic()
                time.sleep(0.1)
            seen = page.evaluate("window.__seen")
            assert last and last.strip()
            assert len(seen) >= 2, seen  # the reply grew in steps, not all at once
            assert page.locator('[data-testid="user"] img').count() == 1  # the uploaded image
            shot = tmp_path / "web.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("VLMKIT_UPDATE_SCREENSHOT"):  # the picture in docs/serve.md
                shutil.copy(shot, SCREENSHOT)

            # A problem shows in the page; the page keeps working.
            box = page.locator("textarea").first
            box.fill("x" * 1100)
            box.press("Enter")
            page.get_by_text("maximum context length is 1024").first.wait_for(timeout=30_000)
            box.fill("Still there?")
            box.press("Enter")
            page.locator('[data-testid="bot"]').nth(2).wait_for(timeout=60_000)
            assert (
                "maximum context length"
                not in page.locator('[data-testid="bot"]').nth(2).inner_text()
            )
        finally:
            browser.close()
