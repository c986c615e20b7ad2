"""No crashes: a decompression bomb, a truncated file or a folder given to ``/image`` is one line
and the chat goes on; images of extreme shapes never build a giant intermediate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from PIL import Image

from vlmkit.chat import chat_command
from vlmkit.data.processor import ImageProcessor


@pytest.fixture
def images(tmp_path, monkeypatch) -> dict[str, Path]:
    Image.new("RGB", (120, 120), (10, 200, 10)).save(tmp_path / "bomb.png")
    Image.new("RGB", (40, 40), (10, 200, 10)).save(tmp_path / "fine.png")
    full = (tmp_path / "fine.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(full[: len(full) // 2])
    (tmp_path / "folder.png").mkdir()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 120 x 120 is more than twice that
    return {p.stem: p for p in tmp_path.iterdir()}


def test_chat_image_problems_are_one_line_and_the_session_goes_on(images):
    lines = [f"/image {images[name]}" for name in ("bomb", "truncated", "folder", "fine")]
    result = CliRunner().invoke(chat_command, ["--model", "mgm-tiny", "--max-new-tokens", "2"],
                                input="\n".join([*lines, "what colour?", "/quit"]) + "\n")
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert f"{images['bomb']}: refused, too many pixels" in result.output
    assert f"{images['truncated']}: unsupported image format" in result.output
    assert f"image file not found: {images['folder']}" in result.output
    assert f"(image attached to your next message: {images['fine']})" in result.output
    assert "model> " in result.output


@settings(max_examples=20, deadline=None)
@given(long=st.integers(20_000, 200_000), short=st.integers(1, 3),
       aspect=st.sampled_from(["pad", "crop", "resize"]), tall=st.booleans())
def test_extreme_strips_are_processed_without_a_giant_canvas(long, short, aspect, tall):
    size = (short, long) if tall else (long, short)
    pixels = ImageProcessor(lr_size=8, aspect=aspect).pixels(Image.new("RGB", size, (200, 10, 10)))
    assert pixels.shape == (3, 8, 8) and torch.isfinite(pixels).all()
