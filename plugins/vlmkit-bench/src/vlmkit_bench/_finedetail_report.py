"""The fine-detail benchmark's outputs: a markdown report and a PNG plot drawn with Pillow.

The plot shows accuracy (fine and coarse) against visual tokens per image, one point per model,
on a log-2 token axis; Pillow draws it so the benchmark needs no plotting library.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

LABELS = {"lr_only": "LR-only", "hr_tokens": "HR-tokens", "mgm": "MGM"}
_COLOURS = {"fine": (200, 40, 40), "coarse": (40, 90, 200)}


def plot(report: dict[str, Any], path: Path, size: tuple[int, int] = (720, 420)) -> None:
    """Accuracy (0-100 %) against visual tokens per image (log 2), fine and coarse, as a PNG."""
    width, height = size
    left, right, top, bottom = 70, 170, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    models = report["models"]
    tokens = [m["visual_tokens"] for m in models.values()]
    lo, hi = math.log2(min(tokens)) - 0.5, math.log2(max(tokens)) + 0.5

    def x_of(t: float) -> float:
        return left + (math.log2(t) - lo) / (hi - lo) * (width - left - right)

    def y_of(acc: float) -> float:
        return top + (1 - acc) * (height - top - bottom)

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for pct in range(0, 101, 20):
        y = y_of(pct / 100)
        draw.line((left, y, width - right, y), fill=(225, 225, 225))
        draw.text((left - 8, y), f"{pct}%", fill="black", font=font, anchor="rm")
    for t in sorted(set(tokens)):
        draw.text((x_of(t), height - bottom + 8), str(t), fill="black", font=font, anchor="mt")
    draw.text(((left + width - right) / 2, height - 22), "visual tokens per image (log scale)",
              fill="black", font=font, anchor="mm")  # fmt: skip
    draw.text((width / 2, 16), "fine-detail benchmark: accuracy vs visual tokens",
              fill="black", font=font, anchor="mm")  # fmt: skip
    points = []  # (x, y, label, colour)
    for kind, colour in _COLOURS.items():
        for name, m in models.items():
            x, y = x_of(m["visual_tokens"]), y_of(m[f"{kind}_acc"])
            draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour)
            points.append((x, y, f"{LABELS[name]} {kind} {m[f'{kind}_acc']:.0%}", colour))
    placed: dict[float, list[float]] = {}  # labels at one x are pushed apart vertically
    for x, y, label, colour in sorted(points, key=lambda p: (p[0], p[1])):
        ys = placed.setdefault(x, [])
        label_y = max([y] + [prev + 15 for prev in ys])
        ys.append(label_y)
        draw.line((x + 6, y, x + 12, label_y), fill=colour)
        draw.text((x + 14, label_y), label, fill=colour, font=font, anchor="lm")
    image.save(path)


def percent(value: float | None) -> str:
    """``0.875`` -> ``"87.5%"``; ``None`` (not measured) -> ``"-"``."""
    return "-" if value is None else f"{value:.1%}"


def stage_data(caption_stages: Sequence[str], stage: str, question_repeats: int = 1) -> str:
    """What ``stage`` (``"pretrain"`` or ``"finetune"``) trains on, in words."""
    if stage not in caption_stages:
        return "the questions"
    repeats = f" (x{question_repeats})" if question_repeats != 1 else ""
    return f"the questions{repeats} and the boards' captions"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: settings, table, stage-0 probes, the example conversation."""
    s, machine = report["settings"], report["machine"]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stage1, stage2 = (stage_data(s["caption_stages"], stage, s["question_repeats"])
                      for stage in ("pretrain", "finetune"))  # fmt: skip
    lines = [
        "# vlmkit fine-detail benchmark",
        "",
        f"{when}; {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch "
        f"threads, torch {machine['torch']}. Seed {report['seed']}. Whole run "
        f"{report['total_s']:.0f} s wall, {report['total_cpu_s']:.0f} s process CPU.",
        "",
        f"Boards of {s['task']['grid']}x{s['task']['grid']} coloured cells with glyphs at "
        f"{s['task']['image_size']} px (HR); the LR view is their {s['lr_size']} px bilinear "
        f"downsample. Questions ask for the character (fine) and the colour (coarse) of the "
        f"{s['task']['frames']} framed cell(s). {s['train_images']} training, "
        f"{s['test_images']} unseen test images.",
        "",
        "**The vision towers are trained here** (stage 0): no pretrained towers exist offline. "
        f"Each tower gets the same {s['stage0_steps']} steps x {s['stage0_batch']} images of "
        "per-cell glyph/colour/frame classification, counted in its model's train time. "
        "**So is the LLM**: one LLM, copied into all three models, first learns the "
        f"conversations with each image given as symbols ({s['llm_stage0_steps']} steps: cell "
        "tokens = sum of learned glyph, colour and frame embeddings). Then "
        f"stage 1 ({s['stage1_steps']} steps on {stage1}, miner + projector, LLM frozen) and "
        f"stage 2 ({s['stage2_steps']} steps on {stage2}, + LLM), batch {s['batch']}, the same "
        "for all three models. *Board read* (when captions are trained): the fraction of the "
        "test boards' caption characters the model gets right (teacher-forced).",
        "",
        "| model | fine acc | coarse acc | visual tokens | board read | train s (wall / CPU) "
        "| infer ms/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        lines.append(
            f"| {LABELS[name]} | {m['fine_acc']:.1%} | {m['coarse_acc']:.1%} "
            f"| {m['visual_tokens']} | {percent(m['read_acc'])} "
            f"| {m['train_s']:.0f} / {m['train_cpu_s']:.0f} | {m['infer_s_per_image'] * 1e3:.1f} |"
        )
    lines += ["", "Stage 0 towers (per-cell accuracy on the validation images):", "",
              "| tower | glyph | colour | frame | wall s |", "|---|---|---|---|---|"]  # fmt: skip
    for key, t in report["towers"].items():
        lines.append(f"| {key} | {t['val_glyph_acc']:.1%} | {t['val_colour_acc']:.1%} | "
                     f"{t['val_frame_acc']:.1%} | {t['wall_s']:.0f} |")  # fmt: skip
    lines += ["", f"Example (test image `{report['example']['id']}`, `example.png`):", ""]
    for name, turns in report["example"]["answers"].items():
        lines.append(f"- **{LABELS[name]}**: " + "; ".join(
            f"{t['question']} → `{t['answer']}` (truth `{t['truth']}`)"
            for t in turns))  # fmt: skip
    lines += ["", "![accuracy vs visual tokens](accuracy_vs_tokens.png)", ""]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], out: Path) -> list[Path]:
    """``report.md``, ``accuracy_vs_tokens.png`` and ``example.png`` in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.md", out / "accuracy_vs_tokens.png", out / "example.png"]
    paths[0].write_text(markdown(report))
    plot(report, paths[1])
    report["example_image"].save(paths[2])
    return paths
