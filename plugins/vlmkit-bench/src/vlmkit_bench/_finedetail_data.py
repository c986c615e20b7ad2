"""The fine-detail task's images and LLaVA-format conversations, generated from a seed.

An image is a ``grid x grid`` board of cells, each with a coloured background and one small glyph
(a digit or capital letter) drawn with the TrueType font that ships with Pillow. The glyphs are
sized to be legible at the HR size and not at the LR size (the LR view is a 4x bilinear
downsample). One cell (or two) is marked with a white (and a black) frame, thick enough to be
seen at the LR size. Every image gets one multi-turn conversation about the marked places: *fine*
questions ("Which character is in the white frame?") and *coarse* ones ("Which colour is in the
black frame?", the cell's background). Every image also gets two captions, "Read the board."
answered with all its characters in raster order (64 glyph labels where a question gives one),
and "Name the colours." answered with every cell's colour initial, which the benchmark mixes
into its training stages.

Splits are disjoint by construction: image ``i`` of split ``s`` is drawn from the random stream
seeded by ``(seed, s, i)``, and a test image is dropped when its cells equal a training image's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

GLYPHS = "0123456789AEHKPX"
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 50, 50),
    "green": (60, 170, 70),
    "blue": (70, 120, 235),
    "yellow": (235, 215, 60),
    "purple": (160, 90, 210),
    "orange": (245, 145, 40),
}
SPLITS = ("train", "val", "test")


FRAMES = ("white", "black")
FRAME_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0)}


@dataclass(frozen=True)
class TaskSpec:
    """The look of the boards: ``image_size`` (HR side, px), ``grid`` cells per side,
    ``glyph_size`` (font size, px), ``jitter`` (max glyph offset from the cell centre, px),
    ``frame`` (width of the frames marking the asked cells, px; 4 px survive a 4x bilinear
    downsample as a 1 px ring), ``frames`` (framed cells per image, 1 or 2: white, then black)."""

    image_size: int = 256
    grid: int = 8
    glyph_size: int = 12
    jitter: int = 4
    frame: int = 4
    frames: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= len(FRAMES):
            raise ValueError(f"frames must be in 1..{len(FRAMES)}, got {self.frames}")
        if self.image_size % self.grid:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of grid={self.grid}"
            )

    @property
    def cell(self) -> int:
        return self.image_size // self.grid


@dataclass(frozen=True)
class Board:
    """One image's content, 0-based rows/cols: ``glyphs[r][c]``, ``colours[r][c]`` (names),
    glyph ``offsets[r][c]`` (px) and ``frames`` (frame name -> framed cell ``(r, c)``)."""

    glyphs: tuple[tuple[str, ...], ...]
    colours: tuple[tuple[str, ...], ...]
    offsets: tuple[tuple[tuple[int, int], ...], ...]
    frames: tuple[tuple[str, tuple[int, int]], ...]

    def key(self) -> tuple:
        return (self.glyphs, self.colours, self.frames)

    def frame_at(self, r: int, c: int) -> str | None:
        return next((name for name, place in self.frames if place == (r, c)), None)


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow < 10.1 has only a bitmap font
        raise RuntimeError("the fine-detail task needs Pillow >= 10.1 (its built-in TrueType font)")
    return font


def random_board(spec: TaskSpec, rng: random.Random) -> Board:
    n, j = spec.grid, spec.jitter
    glyphs = tuple(tuple(rng.choice(GLYPHS) for _ in range(n)) for _ in range(n))
    colours = tuple(tuple(rng.choice(list(COLOURS)) for _ in range(n)) for _ in range(n))
    offsets = tuple(
        tuple((rng.randint(-j, j), rng.randint(-j, j)) for _ in range(n)) for _ in range(n)
    )
    places = rng.sample(range(n * n), spec.frames)
    frames = tuple((name, divmod(p, n)) for name, p in zip(FRAMES, places))
    return Board(glyphs, colours, offsets, frames)


def draw_board(board: Board, spec: TaskSpec) -> Image.Image:
    """The board as an RGB image ``image_size x image_size``."""
    image = Image.new("RGB", (spec.image_size, spec.image_size))
    draw = ImageDraw.Draw(image)
    font, cell = _font(spec.glyph_size), spec.cell
    for r in range(spec.grid):
        for c in range(spec.grid):
            x0, y0 = c * cell, r * cell
            box = (x0, y0, x0 + cell - 1, y0 + cell - 1)
            draw.rectangle(box, fill=COLOURS[board.colours[r][c]])
            frame = board.frame_at(r, c)
            if frame is not None:
                draw.rectangle(box, outline=FRAME_COLOURS[frame], width=spec.frame)
            dx, dy = board.offsets[r][c]
            centre = (x0 + cell / 2 + dx, y0 + cell / 2 + dy)
            draw.text(centre, board.glyphs[r][c], fill=(0, 0, 0), font=font, anchor="mm")
    return image


def fine_question(frame: str) -> str:
    return f"Which character is in the {frame} frame?"


def coarse_question(frame: str) -> str:
    return f"Which colour is in the {frame} frame?"


CAPTION_PROMPT = "Read the board."
COLOURS_PROMPT = "Name the colours."


def caption(board: Board) -> list[dict]:
    """The board's caption as LLaVA turns: :data:`CAPTION_PROMPT` after ``<image>``, answered with
    every cell's character in raster order, without separators (``grid * grid`` characters)."""
    return [
        {"from": "human", "value": f"<image>\n{CAPTION_PROMPT}"},
        {"from": "gpt", "value": "".join("".join(row) for row in board.glyphs)},
    ]


def colour_caption(board: Board) -> list[dict]:
    """The board's colours as LLaVA turns: :data:`COLOURS_PROMPT` after ``<image>``, answered with
    every cell's colour initial in raster order (``grid * grid`` characters; the initials of
    :data:`COLOURS` are distinct)."""
    return [
        {"from": "human", "value": f"<image>\n{COLOURS_PROMPT}"},
        {"from": "gpt", "value": "".join(colour[0] for row in board.colours for colour in row)},
    ]


def conversation(board: Board, rng: random.Random) -> tuple[list[dict], list[str]]:
    """LLaVA turns (``{"from": "human"|"gpt", "value": ...}``, ``<image>`` in the first) and the
    kind (``"fine"``/``"coarse"``) of each question, in order: the character and the colour of
    every framed cell, shuffled."""
    asked = [(kind, name, place) for name, place in board.frames for kind in ("fine", "coarse")]
    rng.shuffle(asked)
    turns: list[dict] = []
    for i, (kind, name, (r, c)) in enumerate(asked):
        if kind == "fine":
            question, answer = fine_question(name), board.glyphs[r][c]
        else:
            question, answer = coarse_question(name), board.colours[r][c]
        turns.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + question})
        turns.append({"from": "gpt", "value": answer})
    return turns, [kind for kind, _, _ in asked]

def generate(spec: TaskSpec, seed: int, sizes: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Records per split: ``{"id", "image" (PIL), "conversations", "kinds", "caption", "colours",
    "board"}`` (``conversations``: the questions, see :func:`conversation`; ``caption``:
    :func:`caption`; ``colours``: :func:`colour_caption`).

    ``sizes``: images per split name (``train``, ``val``, ``test``). Boards repeated across splits
    are redrawn, so no image of one split appears in another.
    """
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected names from {SPLITS}")
    seen: set[tuple] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for split_index, split in enumerate(SPLITS):
        if split not in sizes:
            continue
        records = []
        attempt = 0
        while len(records) < sizes[split]:
            rng = random.Random(f"{seed}/{split_index}/{attempt}")
            attempt += 1
            board = random_board(spec, rng)
            if board.key() in seen:
                continue
            seen.add(board.key())
            turns, kinds = conversation(board, rng)
            records.append(
                {
                    "id": f"{split}-{seed}-{len(records)}",
                    "image": draw_board(board, spec),
                    "conversations": turns,
                    "kinds": kinds,
                    "caption": caption(board),
                    "colours": colour_caption(board),
                    "board": board,
                }
            )
        out[split] = records
    return out
