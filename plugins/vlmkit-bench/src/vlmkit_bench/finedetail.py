"""The fine-detail benchmark: Mini-Gemini's claim reproduced offline on a CPU, in minutes.

MGM's claim is that mining HR features lets a VLM read fine detail without giving the LLM more
visual tokens. The task (:mod:`vlmkit_bench._finedetail_data`) is a board of coloured cells, each
holding a glyph legible at the HR size (256 px) and not at the LR size (64 px, the bilinear
downsample of the HR view, as MGM makes it); the questions ask for the glyph (fine) and the
colour (coarse) of a framed cell. Three compositions are built from config dicts through
the registry, trained with the same budget and evaluated on an unseen test split:

- ``lr_only``: LR CLIP ViT (patch 8 at 64 px: 64 tokens), ``identity`` miner (LLaVA-style);
- ``hr_tokens``: the same ViT architecture run at 256 px with patch 16 (256 tokens, 4x);
- ``mgm``: the LR ViT + an HR ConvNeXt (``timm``, a tiny ConvNeXt) + ``patch_info_mining`` (64
  tokens).

No pretrained towers or LLM exist offline, so a disclosed **stage 0** pretrains every tower on the
generated images (:mod:`vlmkit_bench._finedetail_towers`; same objective and budget per tower)
and the LLM on the conversations with each image given as symbols
(:mod:`vlmkit_bench._finedetail_llm`; one LLM, copied into all three), counted in the train
time; then MGM's stage 1 (miner + projector) and stage 2 (+ LLM) follow
(:mod:`vlmkit_bench._finedetail_fit`), with the frozen towers' outputs computed once per image
(:mod:`vlmkit.train.feature_cache`). Both stages train on the questions and the boards' captions
(each board's glyphs, and its colours, read out cell by cell: 64 glyph labels per image where
the fine question gives one), the projector starting at zero; :class:`Settings` says why. The
questions ask about framed cells (visible at both sizes), so the tiny LLM need not learn to map
"row r, column c" to a token (the projectors' ``pos_embed_grid`` option is the general tool for
that). Accuracy is exact match of each answer, all of an image's questions answered in one
teacher-forced pass with the true earlier answers in the history (what greedy decoding of each
answer would produce given that history).

``vlmkit demo`` and ``vlmkit bench finedetail`` run it (:func:`run`); the commands come from this
plugin (``vlmkit-bench``) through vlmkit's ``vlmkit_register_commands`` hook.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import torch

from vlmkit_bench._finedetail_data import COLOURS, FRAMES, GLYPHS, TaskSpec, generate
from vlmkit.data.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX, build_example
from vlmkit.data.processor import ImageProcessor
from vlmkit.data.views import resize_view

MODELS = ("lr_only", "hr_tokens", "mgm")
CAPTIONS = ("caption", "colours")  # the records' caption conversations: glyphs, colour initials
STAGES = ("pretrain", "finetune")  # MGM's stage 1 and stage 2
LABELS = {"lr_only": "LR-only", "hr_tokens": "HR-tokens", "mgm": "MGM"}
TEMPLATE = "vicuna_v1"
NO_SYSTEM = {"role": "system", "content": ""}  # the task needs no system prompt: shorter sequences


@dataclass
class Settings:
    """Everything that decides the benchmark's numbers (all three models share the budget)."""

    seed: int = 0
    task: TaskSpec = field(default_factory=TaskSpec)
    lr_size: int = 64
    train_images: int = 1024
    val_images: int = 64
    test_images: int = 128
    tower_width: int = 64
    tower_layers: int = 3
    llm_width: int = 64
    llm_layers: int = 2
    # The LLM's weight init std (HF's default 0.02 is sized for widths in the thousands): at width
    # 64 with 0.02 it sat at chance on a 16-way readout of a glyph handed to it for ~1,000 steps;
    # with 0.06 it learned it in 400 (measured 2026-11-25, docs/benchmarks.md "What was tried").
    llm_init: float = 0.06
    stage0_steps: int = 150
    stage0_batch: int = 16
    stage0_lr: float = 8e-3
    llm_stage0_steps: int = 800  # the LLM on symbolic boards (:mod:`._finedetail_llm`)
    llm_stage0_lr: float = 2e-3
    stage1_steps: int = 800
    stage1_lr: float = 2e-3
    # Stage 2 keeps raising MGM's fine accuracy (one run: 37 / 45 / 56% after 200 / 400 / 800
    # steps, measured 2026-11-25); 400 is what the 10-minute budget holds.
    stage2_steps: int = 400
    stage2_lr: float = 2e-3
    miner_lr_multiplier: float = 1.0  # on the miner's learning rate in stages 1 and 2
    # The stages whose data mixes the boards' captions in with the questions ("pretrain" = stage 1,
    # "finetune" = stage 2; the LLM's stage 0 then learns them too). A caption gives every cell's
    # glyph and colour where the questions give one cell's. Without captions the one fine label
    # per image starved the miner (MGM 35% fine over 3 seeds); with glyph-only captions the colour
    # answers collapsed for 2 of 3 stage-0 LLMs (measured 2026-11-25, docs/benchmarks.md "What
    # was tried").
    caption_stages: tuple[str, ...] = STAGES
    # How many times each image's questions appear in a stage's data that has the captions (each
    # caption once): a caption has 64 answer characters, the questions a few; with them once
    # each (glyph captions only), the colour answers fell to 48%.
    question_repeats: int = 4
    # Start the projector's last layer at zero (``zero_init_last``): with random visual tokens at
    # its start, stage 1 through a frozen LLM sat at chance on the captions for some LLMs.
    zero_init_projector: bool = True
    batch: int = 16

    def __post_init__(self) -> None:
        unknown = set(self.caption_stages) - set(STAGES)
        if unknown:
            raise ValueError(f"caption_stages has unknown stage(s) {sorted(unknown)}; "
                             f"expected names from {STAGES}")  # fmt: skip
        n = self.question_repeats
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"question_repeats must be a positive int, got {n!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings(quick: bool = False, seed: int = 0) -> Settings:
    """The default run, or ``quick``: fewer images and steps (for a first look and CI)."""
    if not quick:
        return Settings(seed=seed)
    return Settings(
        seed=seed, train_images=512, val_images=32, test_images=64, stage0_steps=100,
        stage1_steps=200, stage2_steps=100,
    )  # fmt: skip


# --- compositions ---------------------------------------------------------------------------------


def _vit(s: Settings, image_size: int, patch_size: int) -> dict[str, Any]:
    return {
        "name": "hf-clip-vit",
        "select_layer": -2,
        "config": {
            "hidden_size": s.tower_width,
            "intermediate_size": 2 * s.tower_width,
            "num_hidden_layers": s.tower_layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
        },
    }


def _convnext(s: Settings) -> dict[str, Any]:
    # timm's tiny ConvNeXt, widened to 48/64 channels with 2/1 blocks in its first two stages;
    # those two fused as MGM fuses its four (later stages add cost and no detail here: the glyphs
    # are read at stride 4 and 8).
    return {"name": "timm", "model_name": "test_convnext", "image_size": s.task.image_size,
            "out_indices": (0, 1),
            "model_kwargs": {"dims": [48, 64, 64, 64], "depths": [2, 1, 1, 1]}}  # fmt: skip


def _llm(s: Settings) -> dict[str, Any]:
    return {
        "name": "hf-causal-lm",
        "tokenizer": "byte-level",
        "config": {
            "model_type": "llama",
            "hidden_size": s.llm_width,
            "intermediate_size": 2 * s.llm_width,
            "num_hidden_layers": s.llm_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "vocab_size": 260,
            "max_position_embeddings": 1024,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 3,
            "initializer_range": s.llm_init,
        },
    }


def compositions(s: Settings) -> dict[str, dict[str, Any]]:
    """The three config dicts, built with :func:`vlmkit.build`."""
    common = {"llm": _llm(s), "chat_template": TEMPLATE, "image_aspect_ratio": "pad"}
    projector = {"name": "mlp2x_gelu", "zero_init_last": s.zero_init_projector}
    return {
        "lr_only": {
            "description": "LLaVA-style: LR ViT, LR tokens",
            "lr_encoder": _vit(s, s.lr_size, 8),
            "miner": {"name": "identity"},
            "projector": dict(projector),
            **common,
        },
        "hr_tokens": {
            "description": "the LR ViT architecture at the HR size, patch 16",
            "lr_encoder": _vit(s, s.task.image_size, 16),
            "miner": {"name": "identity"},
            "projector": dict(projector),
            **common,
        },
        "mgm": {
            "description": "Mini-Gemini: LR ViT + HR ConvNeXt, patch info mining, LR tokens",
            "lr_encoder": _vit(s, s.lr_size, 8),
            "hr_encoder": _convnext(s),
            "miner": {"name": "patch_info_mining"},  # backend "auto"
            "projector": dict(projector),
            **common,
        },
    }


# --- data -----------------------------------------------------------------------------------------


def messages(record: dict[str, Any], key: str = "conversations") -> list[dict[str, str]]:
    """A record's LLaVA turns ``record[key]`` as chat messages (after an empty system message)."""
    roles = {"human": "user", "gpt": "assistant"}
    turns = record[key]
    return [NO_SYSTEM] + [{"role": roles[t["from"]], "content": t["value"]} for t in turns]


def hr_pixels(records: list[dict[str, Any]], size: int) -> torch.Tensor:
    """Normalised HR pixels ``(N, 3, size, size)`` of the records' images (CLIP statistics)."""
    processor = ImageProcessor(lr_size=size)
    return torch.stack([processor.pixels(r["image"]) for r in records])


def model_pixels(model: Any, hr: torch.Tensor) -> torch.Tensor:
    """What a model is fed: the HR pixels, or their LR view for a model whose input is LR-sized."""
    size = model.processor.input_size
    return resize_view(hr, size)


def cell_targets(records: list[dict[str, Any]]) -> torch.Tensor:
    """Stage-0 targets ``(N, grid*grid, 3)``: glyph, colour and frame (0 = none) class indices of
    every cell in raster order."""
    colour_names, frame_names = list(COLOURS), (None, *FRAMES)
    out = []
    for record in records:
        board = record["board"]
        n = len(board.glyphs)
        out.append([
            (GLYPHS.index(board.glyphs[r][c]), colour_names.index(board.colours[r][c]),
             frame_names.index(board.frame_at(r, c)))
            for r in range(n) for c in range(n)
        ])  # fmt: skip
    return torch.tensor(out)


def items(
    model: Any, records: list[dict[str, Any]], pixels: torch.Tensor, key: str = "conversations"
) -> list[dict[str, Any]]:
    """Training items ``{"input_ids", "labels", "pixels", "id"}`` as the LLaVA dataset makes them
    from each record's ``key`` turns (``"conversations"``: the questions; or one of
    :data:`CAPTIONS`),
    ``pixels`` being the model's processor output for the image's tensor
    (see :func:`model_pixels`)."""
    tok = model.llm.tokenizer
    out = []
    for record, px in zip(records, pixels):
        example = build_example(messages(record, key), tok, TEMPLATE)
        out.append({**example, "pixels": model.preprocess(px[None]), "id": record["id"]})
    return out


# --- evaluation -----------------------------------------------------------------------------------


def _answer_spans(
    ids: torch.Tensor, labels: torch.Tensor, shift: int
) -> list[list[tuple[int, int]]]:
    """Per answer: ``(position in the spliced sequence, token id)`` of each supervised token."""
    image_at = int((ids == IMAGE_TOKEN_INDEX).nonzero()[0])
    spans: list[list[tuple[int, int]]] = []
    previous = -2
    for j in (labels != IGNORE_INDEX).nonzero().flatten().tolist():
        if j != previous + 1:
            spans.append([])
        spans[-1].append((j + shift if j > image_at else j, int(labels[j])))
        previous = j
    return spans


def _predictions(
    model: Any, data: list[dict[str, Any]], batch: int
) -> Iterator[tuple[int, torch.Tensor, list[list[list[tuple[int, int]]]]]]:
    """Teacher-forced greedy predictions, ``batch`` items at a time: ``(start, predicted (b, L),
    answer spans per item)`` (see :func:`_answer_spans`)."""
    from vlmkit_bench._finedetail_fit import collator

    collate = collator(model)
    model.eval()
    shift = model.num_visual_tokens - 1
    for start in range(0, len(data), batch):
        chunk = data[start : start + batch]
        inputs = collate(chunk)
        labels = inputs.pop("labels")
        with torch.no_grad():
            predicted = model(**inputs).logits.argmax(-1)
        spans = [_answer_spans(item["input_ids"], labels[b], shift) for b, item in enumerate(chunk)]
        yield start, predicted, spans


def evaluate(
    model: Any, records: list[dict[str, Any]], data: list[dict[str, Any]], batch: int
) -> dict[str, Any]:
    """Exact-match accuracy on fine and coarse answers, and inference time per image."""
    right = {"fine": 0, "coarse": 0}
    total = {"fine": 0, "coarse": 0}
    wall = time.perf_counter()
    for start, predicted, spans in _predictions(model, data, batch):
        for b, item_spans in enumerate(spans):
            kinds = records[start + b]["kinds"]
            if len(item_spans) != len(kinds):
                raise RuntimeError(f"{len(item_spans)} answers found for {len(kinds)} questions")
            for span, kind in zip(item_spans, kinds):
                total[kind] += 1
                right[kind] += all(int(predicted[b, pos - 1]) == tok for pos, tok in span)
    elapsed = time.perf_counter() - wall
    return {
        "fine_acc": right["fine"] / max(1, total["fine"]),
        "coarse_acc": right["coarse"] / max(1, total["coarse"]),
        "questions": total,
        "infer_s_per_image": elapsed / max(1, len(data)),
    }


def read_accuracy(model: Any, data: list[dict[str, Any]], batch: int) -> float:
    """How well ``model`` reads whole boards: the fraction of the glyph captions' answer tokens
    predicted right (teacher-forced, greedy), counting the tokens that hold text (with the
    byte-level tokenizer, one per character), not the end of turn or whitespace. ``data``: glyph
    caption items (:func:`items` with ``key="caption"``)."""
    decode = model.llm.tokenizer.decode
    right = total = 0
    for _, predicted, spans in _predictions(model, data, batch):
        for b, item_spans in enumerate(spans):
            for span in item_spans:
                for pos, tok in span[:-1]:
                    truth = decode([tok]).strip()
                    if truth:
                        right += decode([int(predicted[b, pos - 1])]).strip() == truth
                        total += 1
    return right / max(1, total)


def example_chat(model: Any, record: dict[str, Any], pixels: torch.Tensor) -> list[dict[str, str]]:
    """The model answering one test image's questions with :meth:`chat`, turn by turn (its own
    replies kept in the history): ``[{"question", "answer", "truth"}]``. ``pixels``: the image as
    the model is fed, ``(1, 3, S, S)`` (see :func:`model_pixels`)."""
    turns = record["conversations"]
    history: list[dict[str, str]] = [NO_SYSTEM]
    out = []
    for question, truth in zip(turns[0::2], turns[1::2]):
        history.append({"role": "user", "content": question["value"]})
        reply = model.chat(pixels, history, max_new_tokens=8)
        history.append({"role": "assistant", "content": reply})
        out.append({"question": question["value"].replace("<image>\n", ""), "answer": reply,
                    "truth": truth["value"]})  # fmt: skip
    return out


# --- the run --------------------------------------------------------------------------------------


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _stage0(encoder: Any, pixels: torch.Tensor, val_pixels: torch.Tensor, s: Settings,
            targets: torch.Tensor, val_targets: torch.Tensor, desc: str,
            show: bool) -> dict[str, Any]:  # fmt: skip
    from vlmkit_bench._finedetail_towers import pretrain_tower, probe_accuracy

    with _bar(s.stage0_steps, desc, show) as bar:
        result = pretrain_tower(
            encoder, pixels, targets, grid=s.task.grid, steps=s.stage0_steps,
            batch=s.stage0_batch, lr=s.stage0_lr, seed=s.seed,
            progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")),
        )  # fmt: skip
    glyph, colour, frame = probe_accuracy(encoder, result.pop("head"), val_pixels, val_targets,
                                          grid=s.task.grid)  # fmt: skip
    return {**result, "val_glyph_acc": glyph, "val_colour_acc": colour, "val_frame_acc": frame}


def _llm_stage0(model: Any, train: dict[str, list[dict[str, Any]]], targets: torch.Tensor,
                s: Settings, show: bool) -> dict[str, Any]:  # fmt: skip
    """The LLM's stage 0 on every conversation in ``train`` (see :func:`_items`: the questions,
    and the captions when a stage trains on them)."""
    from vlmkit_bench._finedetail_llm import pretrain_llm

    data = [item for conversation in train.values() for item in conversation]
    with _bar(s.llm_stage0_steps, "stage 0 llm", show) as bar:
        return pretrain_llm(
            model, data, targets.repeat(len(train), 1, 1), steps=s.llm_stage0_steps,
            batch=s.batch, lr=s.llm_stage0_lr, seed=s.seed,
            progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")),
        )  # fmt: skip


def _items(
    model: Any, records: list[dict[str, Any]], hr: torch.Tensor, s: Settings
) -> dict[str, list]:
    """A model's items of ``records`` (HR pixels ``hr``) per conversation: ``"conversations"``,
    and the :data:`CAPTIONS` when a stage trains on them (see :func:`items`)."""
    pixels = model_pixels(model, hr)
    keys = ("conversations", *CAPTIONS) if s.caption_stages else ("conversations",)
    return {key: items(model, records, pixels, key) for key in keys}


def stage_items(train: dict[str, list], stage: str, s: Settings) -> list[dict[str, Any]]:
    """What ``stage`` trains on, from a model's items per conversation (see :func:`_items`): the
    questions, and when ``stage`` is in ``s.caption_stages`` the :data:`CAPTIONS` too, each
    image's questions then ``s.question_repeats`` times."""
    if stage not in s.caption_stages:
        return train["conversations"]
    captions = [item for key in CAPTIONS for item in train[key]]
    return train["conversations"] * s.question_repeats + captions


def run(s: Settings | None = None, *, progress: bool = True,
        log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:  # fmt: skip
    """Generate the data, pretrain the towers and the LLM (stage 0), train the three compositions
    (stages 1 and 2, same budget) and evaluate them on the test split.

    Returns ``{"models": {name: {"fine_acc", "coarse_acc", "visual_tokens", "train_s",
    "infer_s_per_image", ...}}, "seed", "settings", "towers", "example", "machine", "total_s"}``;
    times are wall seconds (``*_cpu_s``: this process's CPU seconds).
    """
    from vlmkit_bench._finedetail_fit import fit
    from vlmkit.model import build
    from vlmkit.train.feature_cache import cache_frozen_towers

    s = s or settings()
    torch.manual_seed(s.seed)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    sizes = {"train": s.train_images, "val": s.val_images, "test": s.test_images}
    data = generate(s.task, s.seed, sizes)
    hr = {split: hr_pixels(records, s.task.image_size) for split, records in data.items()}
    targets = {split: cell_targets(records) for split, records in data.items()}
    log(f"generated {sizes} images ({s.task.image_size} px HR, {s.lr_size} px LR) "
        f"in {time.perf_counter() - start_wall:.1f}s")  # fmt: skip

    configs = compositions(s)
    models = {name: build(configs[name]) for name in MODELS}
    # Stage 0: each distinct tower once (LR-only and MGM share the LR tower), same budget each.
    towers: dict[str, dict[str, Any]] = {}
    lr_tower = models["lr_only"].lr_encoder
    for key, encoder in (("lr_vit", lr_tower), ("hr_vit", models["hr_tokens"].lr_encoder),
                         ("hr_convnext", models["mgm"].hr_encoder)):  # fmt: skip
        size = encoder.info.image_size
        train_px, val_px = resize_view(hr["train"], size), resize_view(hr["val"], size)
        towers[key] = _stage0(encoder, train_px, val_px, s, targets["train"], targets["val"],
                              f"stage 0 {key}", progress)  # fmt: skip
        log(f"stage 0 {key}: {towers[key]['wall_s']:.1f}s, val per-cell glyph acc "
            f"{towers[key]['val_glyph_acc']:.1%}, colour {towers[key]['val_colour_acc']:.1%}")
    models["mgm"].lr_encoder.load_state_dict(lr_tower.state_dict())
    # Stage 0 of the LLM, once (on LR-only's 64-token layout); every model starts from it.
    train_items = {"lr_only": _items(models["lr_only"], data["train"], hr["train"], s)}
    llm0 = _llm_stage0(models["lr_only"], train_items["lr_only"], targets["train"], s, progress)
    log(f"stage 0 llm (symbolic boards): {llm0['wall_s']:.1f}s, final loss {llm0['loss']:.3f}")
    for name in ("hr_tokens", "mgm"):
        models[name].llm.load_state_dict(models["lr_only"].llm.state_dict())
    tower_of = {"lr_only": ["lr_vit"], "hr_tokens": ["hr_vit"], "mgm": ["lr_vit", "hr_convnext"]}

    results: dict[str, dict[str, Any]] = {}
    example_record = data["test"][0]
    example: dict[str, Any] = {"id": example_record["id"], "answers": {}}
    for name in MODELS:
        model = models[name]
        train = train_items.pop(name, None) or _items(model, data["train"], hr["train"], s)
        test_items = _items(model, data["test"], hr["test"], s)
        stages = {}
        with cache_frozen_towers(model):  # the towers are frozen: each image's features once
            for stage, steps, lr in zip(STAGES, (s.stage1_steps, s.stage2_steps),
                                        (s.stage1_lr, s.stage2_lr)):  # fmt: skip
                stages[stage] = fit(model, stage_items(train, stage, s), stage=stage, steps=steps,
                                    lr=lr, batch=s.batch, seed=s.seed, progress=progress,
                                    lr_multipliers={"miner": s.miner_lr_multiplier})  # fmt: skip
            read_acc = (read_accuracy(model, test_items["caption"], s.batch)
                        if s.caption_stages else None)  # fmt: skip
        scores = evaluate(model, data["test"], test_items["conversations"], s.batch)
        stage0_wall = llm0["wall_s"] + sum(towers[t]["wall_s"] for t in tower_of[name])
        stage0_cpu = llm0["cpu_s"] + sum(towers[t]["cpu_s"] for t in tower_of[name])
        results[name] = {
            "fine_acc": scores["fine_acc"],
            "coarse_acc": scores["coarse_acc"],
            "visual_tokens": model.num_visual_tokens,
            "train_s": stage0_wall + sum(r["wall_s"] for r in stages.values()),
            "train_cpu_s": stage0_cpu + sum(r["cpu_s"] for r in stages.values()),
            "stage0_s": stage0_wall,
            "stage1_s": stages["pretrain"]["wall_s"],
            "stage2_s": stages["finetune"]["wall_s"],
            "read_acc": read_acc,
            "final_loss": stages["finetune"]["loss"],
            "infer_s_per_image": scores["infer_s_per_image"],
            "questions": scores["questions"],
            "towers": tower_of[name],
            "config": configs[name],
        }
        pixels = model_pixels(model, hr["test"][:1])
        example["answers"][name] = example_chat(model, example_record, pixels)
        log(f"{LABELS[name]}: fine {scores['fine_acc']:.1%}, coarse {scores['coarse_acc']:.1%}, "
            f"{model.num_visual_tokens} visual tokens")  # fmt: skip
    return {
        "models": results,
        "seed": s.seed,
        "settings": s.to_dict(),
        "towers": towers,
        "llm_stage0": llm0,
        "example": example,
        "example_image": example_record["image"],
        "machine": _machine(),
        "total_s": time.perf_counter() - start_wall,
        "total_cpu_s": time.process_time() - start_cpu,
    }


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip


# --- command line ---------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """The results as a table, one row per model."""
    from vlmkit_bench._finedetail_report import percent

    header = ["model", "fine acc", "coarse acc", "visual tokens", "board read", "train s",
              "infer ms/image"]  # fmt: skip
    rows = [header]
    for name, r in report["models"].items():
        rows.append([LABELS[name], f"{r['fine_acc']:.1%}", f"{r['coarse_acc']:.1%}",
                     str(r["visual_tokens"]), percent(r["read_acc"]), f"{r['train_s']:.0f}",
                     f"{r['infer_s_per_image'] * 1e3:.1f}"])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(row, widths)))  # fmt: skip
        for row in rows
    )


def _main(quick: bool, seed: int, json_path: str | None, out: str, progress: bool) -> None:
    from vlmkit_bench._finedetail_report import stage_data, write_outputs

    s = settings(quick=quick, seed=seed)
    click.echo(
        "vlmkit fine-detail benchmark: can a VLM read glyphs legible only at high resolution "
        "without more visual tokens (Mini-Gemini's claim)?\n"
        "No pretrained towers or LLM exist offline, so they are pretrained here first (stage 0, "
        "counted in the train time): every vision tower on per-cell glyph/colour/frame "
        "classification of the generated images (same budget per tower), the LLM on the "
        "conversations with each image given as symbols (one LLM for all three models); then "
        f"MGM's stage 1 (miner + projector, LLM frozen; on "
        f"{stage_data(s.caption_stages, 'pretrain', s.question_repeats)}) and stage 2 "
        f"(+ LLM; on {stage_data(s.caption_stages, 'finetune', s.question_repeats)}), the "
        "same budget for all three models."
    )
    report = run(s, progress=progress, log=click.echo)
    click.echo("")
    click.echo(format_table(report))
    click.echo(f"(whole run {report['total_s']:.0f}s wall, {report['total_cpu_s']:.0f}s process "
               f"CPU, {report['machine']['torch_threads']} torch threads)")  # fmt: skip
    click.echo(f"\nexample on test image {report['example']['id']}:")
    for name, turns in report["example"]["answers"].items():
        click.echo(f"  {LABELS[name]}:")
        for turn in turns:
            mark = "ok" if turn["answer"] == turn["truth"] else f"truth: {turn['truth']}"
            click.echo(f"    Q: {turn['question']}  A: {turn['answer']!r}  ({mark})")
    paths = write_outputs(report, Path(out))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(_jsonable(report), indent=2))
        paths.append(Path(json_path))
    click.echo("wrote " + ", ".join(str(p) for p in paths))


def _jsonable(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "example_image"}


_OPTIONS = [
    click.option("--quick", is_flag=True, help="Fewer images and steps (about 4 minutes)."),
    click.option("--seed", default=0, show_default=True, help="Seed of the data and the models."),
    click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                 help="Also write the results as JSON."),  # fmt: skip
    click.option("--out", default="out/finedetail", show_default=True,
                 type=click.Path(file_okay=False),
                 help="Folder for the report and the plot."),  # fmt: skip
    click.option("--progress/--no-progress", default=True, help="Progress bars on stderr."),
]


def _with_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


@click.command("finedetail")
@_with_options
def finedetail_command(
    quick: bool, seed: int, json_path: str | None, out: str, progress: bool
) -> None:
    """Fine-detail benchmark: LR-only vs HR-tokens vs MGM, trained and evaluated here (offline)."""
    _main(quick, seed, json_path, out, progress)


@click.command("demo")
@_with_options
def demo_command(quick: bool, seed: int, json_path: str | None, out: str, progress: bool) -> None:
    """Reproduce Mini-Gemini's claim on a CPU, offline: runs `vlmkit bench finedetail`."""
    _main(quick, seed, json_path, out, progress)
