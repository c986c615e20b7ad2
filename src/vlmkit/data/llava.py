"""LLaVA/MGM-format training data: JSON records to token ids, labels and pixels.

A record is ``{"id", "image" (optional: a path, a list of paths, or PIL images), "conversations":
[{"from": "human"|"gpt"|"system", "value": "...<image>..."}]}``. Image paths resolve against the
image folder. Text-only records are allowed. The model's chat template is applied and only the
assistant's answers are supervised (:func:`~vlmkit.data.conversation.build_example`).

Bad records never stop an epoch: a missing or unreadable image, a malformed conversation, or a
sample too long to truncate without cutting into a block of visual tokens makes
``__getitem__`` return ``None``, logs a warning with the sample id (and the image path), and is
counted in :attr:`LlavaDataset.skipped`. :class:`~vlmkit.data.collate.Collator` drops the ``None``s.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from vlmkit.data.conversation import IGNORE_INDEX, IMAGE_TOKEN, IMAGE_TOKEN_INDEX, build_example
from vlmkit._files import read_json
from vlmkit.data.processor import load_image

logger = logging.getLogger(__name__)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "system": "system"}


@dataclass(frozen=True)
class Skipped:
    """One sample left out: its index, id, the image path involved (if any) and why."""

    index: int
    id: Any
    reason: str
    path: str | None = None

    def __str__(self) -> str:
        where = f" (image {self.path})" if self.path else ""
        return f"sample {self.id!r} at index {self.index}{where}: {self.reason}"


def load_records(source: str | Path | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records from a LLaVA JSON file (a list), a JSON-lines file, or a list of dicts."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"LLaVA data file {str(path)!r} does not exist")
        if path.suffix == ".jsonl":
            records = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path} line {number} is not valid JSON: {err.msg}") from None
        else:
            records = read_json(path)
    else:
        records = list(source)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{source!s:.80}: expected a list of records (dicts), got {type(records).__name__}")
    return records


def to_messages(record: dict[str, Any], num_images: int) -> list[dict[str, str]]:
    """A record's ``conversations`` as ``[{"role", "content"}]``.

    As in MGM's preprocessing, a single image's tag moves to the start of its turn
    (``"<image>\\n" + the rest``), and with images but no tag, tags are put before the first user
    turn. The number of tags must equal ``num_images``; otherwise ValueError.
    """
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"'conversations' must be a non-empty list, got {turns!r:.80}")
    messages = []
    for i, turn in enumerate(turns):
        role = ROLES.get(str(turn.get("from", "")).lower()) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise ValueError(
                f"turn {i} must be {{'from': 'human'|'gpt'|'system', 'value': str}}, got {turn!r:.80}"
            )
        messages.append({"role": role, "content": turn["value"]})
    tags = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    if num_images == 1 and tags == 1:  # MGM/LLaVA put a single image first in its turn
        for m in messages:
            if IMAGE_TOKEN in m["content"]:
                m["content"] = IMAGE_TOKEN + "\n" + m["content"].replace(IMAGE_TOKEN, "").strip()
    if num_images and tags == 0:
        first = next((m for m in messages if m["role"] == "user"), None)
        if first is not None:
            first["content"] = IMAGE_TOKEN * num_images + "\n" + first["content"]
            tags = num_images
    if tags != num_images:
        raise ValueError(f"the conversation has {tags} {IMAGE_TOKEN} tag(s) but {num_images} image(s)")
    return messages


class LlavaDataset(torch.utils.data.Dataset):
    """LLaVA-format records prepared for a :class:`~vlmkit.model.VisionLanguageModel`.

    ``records``: a JSON/JSON-lines path or a list of dicts. ``image_folder``: where relative image
    paths resolve (default: the JSON file's folder, else the working directory). ``template``:
    a chat template name (default: the model's). ``max_length``: the most LLM positions a sample
    may take, counting ``num_visual_tokens`` per image; longer samples are cut at the end when
    the cut falls after the last visual block, and otherwise dropped (``truncation="drop"``,
    counted in :attr:`skipped`) or refused (``truncation="error"``).

    ``__getitem__`` returns ``{"input_ids": (L,), "labels": (L,), "pixels": processor output
    (``{"lr", "hr", "num_views"}``) or None, "id"}``, or ``None`` for a skipped sample.
    """

    def __init__(
        self,
        records: str | Path | list[dict[str, Any]],
        image_folder: str | Path | None,
        model: Any,
        *,
        template: str | None = None,
        max_length: int | None = None,
        truncation: str = "drop",
    ) -> None:
        if truncation not in ("drop", "error"):
            raise ValueError(f"truncation must be 'drop' or 'error', got {truncation!r}")
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.records = load_records(records)
        if image_folder is None and isinstance(records, (str, Path)):
            image_folder = Path(records).parent
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.tokenizer = model.llm.tokenizer
        self.processor = model.processor
        self.num_visual_tokens = int(model.num_visual_tokens)
        self.template = template or model.config.chat_template
        self.max_length = max_length
        self.truncation = truncation
        self.skipped: dict[int, Skipped] = {}

    def __len__(self) -> int:
        return len(self.records)

    def sample_id(self, index: int) -> Any:
        return self.records[index].get("id", index)

    def image_sources(self, index: int) -> list[Any]:
        """The record's images: resolved paths (``Path``) or the PIL images given inline.
        ``ValueError`` for an entry that is neither (e.g. ``"image": 123``)."""
        image = self.records[index].get("image")
        items = [] if image is None else image if isinstance(image, (list, tuple)) else [image]
        out = []
        for item in items:
            if isinstance(item, Image.Image):
                out.append(item)
            elif not isinstance(item, (str, Path)) or not str(item):
                raise ValueError(f"'image' must be a path or a list of paths, got {item!r}")
            else:
                path = Path(item)
                if not path.is_absolute() and self.image_folder is not None:
                    path = self.image_folder / path
                out.append(path)
        return out

    def lengths(self) -> list[int]:
        """Cheap length estimates (words + visual tokens) per record, for length-grouped sampling."""
        out = []
        for i, record in enumerate(self.records):
            words = sum(len(str(t.get("value", "")).split()) for t in record.get("conversations", [])
                        if isinstance(t, dict))
            try:
                images = len(self.image_sources(i))
            except ValueError:
                images = 0  # skipped when the sample is read
            out.append(words + self.num_visual_tokens * images)
        return out

    def _skip(self, index: int, reason: str, path: Any = None) -> None:
        if index not in self.skipped:
            entry = Skipped(index, self.sample_id(index), reason, None if path is None else str(path))
            self.skipped[index] = entry
            logger.warning("skipping %s", entry)

    def _load_images(self, index: int) -> list[Image.Image] | None:
        images = []
        try:
            sources = self.image_sources(index)
        except ValueError as err:
            self._skip(index, f"bad record: {err}")
            return None
        for source in sources:
            if isinstance(source, Image.Image):
                images.append(source)
                continue
            try:
                images.append(load_image(source))
            except FileNotFoundError:
                self._skip(index, "image file not found", source)
                return None
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                self._skip(index, f"unreadable image ({type(err).__name__}: {err})", source)
                return None
        return images

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} records")
        if index in self.skipped:
            return None
        record = self.records[index]
        images = self._load_images(index)
        if images is None:
            return None
        try:
            messages = to_messages(record, len(images))
            example = build_example(messages, self.tokenizer, self.template)
        except (ValueError, TypeError, KeyError, AttributeError) as err:  # whatever a record holds
            self._skip(index, f"bad conversation: {type(err).__name__}: {err}")
            return None
        example = self._truncate(index, example)
        if example is None:
            return None
        return {
            "input_ids": example["input_ids"],
            "labels": example["labels"],
            "pixels": self.processor(images) if images else None,
            "id": self.sample_id(index),
        }

    def _truncate(self, index: int, example: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Cut to ``max_length`` LLM positions; never inside or before a visual-token block."""
        ids, labels = example["input_ids"], example["labels"]
        is_image = ids == IMAGE_TOKEN_INDEX
        # LLM positions each id takes: num_visual_tokens for a placeholder, 1 for text.
        ends = torch.cumsum(torch.where(is_image, self.num_visual_tokens, 1), 0)
        total = int(ends[-1]) if len(ends) else 0
        if self.max_length is not None and total > self.max_length:
            keep = int((ends <= self.max_length).sum())
            if bool(is_image[keep:].any()):
                reason = (f"{total} positions with visual tokens exceed max_length={self.max_length} "
                          "and truncating would cut into a block of visual tokens")
                if self.truncation == "error":
                    raise ValueError(f"sample {self.sample_id(index)!r} at index {index}: {reason}")
                self._skip(index, reason)
                return None
            ids, labels = ids[:keep], labels[:keep]
        if not bool((labels[1:] != IGNORE_INDEX).any()):
            self._skip(index, "no assistant tokens to learn from (after truncation)")
            return None
        return {"input_ids": ids, "labels": labels}


COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220),
           "yellow": (240, 220, 40), "black": (10, 10, 10), "white": (250, 250, 250)}


def write_synthetic(folder: str | Path, n: int = 16, *, seed: int = 0) -> Path:
    """Write a small LLaVA-format dataset (``images/*.png`` + ``train.json``) and return the JSON path.

    Each sample is a square of one colour on a grey ground with the question "What colour is the
    square?" and the colour's name as the answer; every fourth sample is text-only. For tests and
    the docs' tiny training runs (no downloads).
    """
    import random

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = sorted(COLOURS)
    records = []
    for i in range(n):
        colour = rng.choice(names)
        if i % 4 == 3:
            records.append({"id": f"text-{i}", "conversations": [
                {"from": "human", "value": f"Name the colour written here: {colour}."},
                {"from": "gpt", "value": colour}]})
            continue
        image = Image.new("RGB", (rng.randint(24, 48), rng.randint(24, 48)), (128, 128, 128))
        w, h = image.size
        image.paste(COLOURS[colour], (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
        image.save(folder / "images" / f"{i:04d}.png")
        records.append({"id": f"img-{i}", "image": f"images/{i:04d}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square?"},
            {"from": "gpt", "value": f"The square is {colour}."}]})
    path = folder / "train.json"
    path.write_text(json.dumps(records, indent=1))
    return path
