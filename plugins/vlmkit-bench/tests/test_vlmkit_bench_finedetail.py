"""The fine-detail benchmark's structure on a miniature run (accuracy targets live in the bench),
and the commands the plugin adds."""

import json

import pytest
import torch
import torch.nn.functional as F
import vlmkit
from click.testing import CliRunner

from vlmkit_bench import finedetail as fd
from vlmkit_bench._finedetail_data import COLOURS, TaskSpec, generate
from vlmkit_bench._finedetail_llm import pretrain_llm
from vlmkit.cli import cli

TINY = dict(
    train_images=6, val_images=3, test_images=3, tower_layers=2, tower_width=16, llm_width=32,
    stage0_steps=2, stage0_batch=2, llm_stage0_steps=2, stage1_steps=1, stage2_steps=2, batch=2,
)  # fmt: skip


def test_splits_are_disjoint_and_seeded():
    spec = TaskSpec()
    data = generate(spec, seed=3, sizes={"train": 20, "val": 5, "test": 10})
    keys = {split: {r["board"].key() for r in records} for split, records in data.items()}
    assert [len(keys[s]) for s in ("train", "val", "test")] == [20, 5, 10]
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    again = generate(spec, seed=3, sizes={"train": 20, "val": 5, "test": 10})
    assert [r["board"] for r in again["test"]] == [r["board"] for r in data["test"]]
    other = generate(spec, seed=4, sizes={"test": 10})
    assert [r["board"] for r in other["test"]] != [r["board"] for r in data["test"]]


def test_conversation_is_one_multiturn_llava_record_with_true_answers():
    record = generate(TaskSpec(), seed=0, sizes={"test": 1})["test"][0]
    turns, board = record["conversations"], record["board"]
    assert [t["from"] for t in turns] == ["human", "gpt"] * len(record["kinds"])
    assert turns[0]["value"].startswith("<image>\n")
    assert sum(t["value"].count("<image>") for t in turns) == 1
    assert record["kinds"].count("fine") == record["kinds"].count("coarse") == len(board.frames)
    places = dict(board.frames)
    for question, answer, kind in zip(turns[0::2], turns[1::2], record["kinds"]):
        frame = next(name for name in places if f"{name} frame" in question["value"])
        r, c = places[frame]
        expected = board.glyphs[r][c] if kind == "fine" else board.colours[r][c]
        assert answer["value"] == expected
    assert record["image"].size == (256, 256)


def test_captions_read_every_glyph_and_every_colour_in_raster_order():
    record = generate(TaskSpec(grid=4, image_size=128), seed=1, sizes={"train": 1})["train"][0]
    board = record["board"]
    cells = [(r, c) for r in range(4) for c in range(4)]
    for key in fd.CAPTIONS:
        prompt, answer = record[key]
        assert (prompt["from"], answer["from"]) == ("human", "gpt")
        assert prompt["value"].startswith("<image>\n") and prompt["value"].count("<image>") == 1
        assert len(answer["value"]) == 16
    glyphs, colours = record["caption"][1]["value"], record["colours"][1]["value"]
    assert [glyphs[4 * r + c] for r, c in cells] == [board.glyphs[r][c] for r, c in cells]
    initials = {name[0]: name for name in COLOURS}
    assert len(initials) == len(COLOURS)  # an initial names one colour
    assert [initials[colours[4 * r + c]] for r, c in cells] == [board.colours[r][c] for r, c in cells]


def test_read_accuracy_counts_caption_characters(monkeypatch):
    s = fd.Settings(**TINY)
    data = generate(s.task, 0, {"test": 2})
    model = vlmkit.build(fd.compositions(s)["lr_only"])
    pixels = fd.model_pixels(model, fd.hr_pixels(data["test"], 256))
    captions = fd.items(model, data["test"], pixels, key="caption")
    shift = model.num_visual_tokens - 1
    spans = [fd._answer_spans(item["input_ids"], item["labels"], shift) for item in captions]
    length = max(pos for item_spans in spans for pos, _ in item_spans[0]) + 1
    predicted = torch.zeros(2, length, dtype=torch.long)
    for b, (span,) in enumerate(spans):
        for pos, tok in span:
            predicted[b, pos - 1] = tok
    wrong = spans[1][0][5][0] - 1  # the 5th character of the second board (after a space)
    predicted[1, wrong] = 0 if predicted[1, wrong] else 1  # any other token
    monkeypatch.setattr(fd, "_predictions", lambda m, d, b: iter([(0, predicted, spans)]))
    assert fd.read_accuracy(model, captions, batch=2) == pytest.approx(127 / 128)


def test_unknown_caption_stage_is_named():
    expected = r"unknown stage\(s\) \['stage2'\]; expected names from \('pretrain', 'finetune'\)"
    with pytest.raises(ValueError, match=expected):
        fd.Settings(caption_stages=("finetune", "stage2"))


def test_stage_items_mix_questions_and_captions_in_the_set_ratio():
    train = {"conversations": ["q1", "q2"], "caption": ["c1", "c2"], "colours": ["k1", "k2"]}
    s = fd.Settings(caption_stages=("pretrain",), question_repeats=3)
    expected = ["c1", "c2", "k1", "k2"] + ["q1"] * 3 + ["q2"] * 3
    assert sorted(fd.stage_items(train, "pretrain", s)) == expected
    assert fd.stage_items(train, "finetune", s) == ["q1", "q2"]
    with pytest.raises(ValueError, match="question_repeats must be a positive int, got 0"):
        fd.Settings(question_repeats=0)


def test_lr_view_is_the_bilinear_downsample_the_mgm_model_makes():
    s = fd.Settings(**TINY)
    data = generate(s.task, 0, {"test": 2})
    hr = fd.hr_pixels(data["test"], s.task.image_size)
    mgm = vlmkit.build(fd.compositions(s)["mgm"])
    lr_only = vlmkit.build(fd.compositions(s)["lr_only"])
    ours = fd.model_pixels(lr_only, hr)
    expected = F.interpolate(hr, size=(64, 64), mode="bilinear", align_corners=False)
    assert ours.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    torch.testing.assert_close(mgm.preprocess(fd.model_pixels(mgm, hr))["lr"], ours, rtol=0, atol=0)


def test_token_counts_of_the_three_compositions():
    s = fd.Settings(**TINY)
    configs = fd.compositions(s)
    tokens = {n: vlmkit.build(configs[n], device="meta").num_visual_tokens for n in fd.MODELS}
    assert tokens["mgm"] == tokens["lr_only"] == (s.lr_size // 8) ** 2
    assert tokens["hr_tokens"] == (s.task.image_size // 16) ** 2
    assert tokens["mgm"] * 4 <= tokens["hr_tokens"]
    assert configs["mgm"]["miner"]["name"] == "patch_info_mining"
    assert configs["lr_only"]["lr_encoder"] == configs["mgm"]["lr_encoder"]
    assert all(configs[n]["projector"] == {"name": "mlp2x_gelu", "zero_init_last": True}
               for n in fd.MODELS)  # fmt: skip


def test_llm_stage0_learns_symbolic_boards_and_changes_only_the_llm():
    s = fd.Settings(**TINY)
    data = generate(s.task, 0, {"train": 8})
    model = vlmkit.build(fd.compositions(s)["lr_only"])
    hr = fd.hr_pixels(data["train"], s.task.image_size)
    train = fd.items(model, data["train"], fd.model_pixels(model, hr))
    targets = fd.cell_targets(data["train"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    pretrain_llm(model, train, targets, steps=60, batch=4, lr=5e-3, seed=0,
                 progress=lambda step, loss: losses.append(loss))  # fmt: skip
    assert len(losses) == 60 and sum(losses[-10:]) < 0.5 * sum(losses[:10])
    after = model.state_dict()
    assert set(after) == set(before)  # the symbol tables are not part of the model
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("llm.") for k in changed)
    assert not any(p.requires_grad for p in model.llm.parameters())
    with pytest.raises(ValueError, match=r"targets must be \(8, 64, 3\)"):
        pretrain_llm(model, train, targets[:, :10], steps=1, batch=2, lr=1e-3, seed=0)


def test_answer_spans_follow_the_visual_tokens():
    # ids: BOS, <image>, 2 text ids, answer "7" + eos; with 3 visual tokens every index after the
    # placeholder moves by 2.
    ids = torch.tensor([1, -200, 10, 11, 55, 2, 12, 56, 2])
    labels = torch.tensor([-100, -100, -100, -100, 55, 2, -100, 56, 2])
    assert fd._answer_spans(ids, labels, shift=2) == [[(6, 55), (7, 2)], [(9, 56), (10, 2)]]


@pytest.mark.slow
@pytest.mark.parametrize("caption_stages", [(), ("finetune",)])
def test_miniature_run_json_and_outputs(tmp_path, monkeypatch, caption_stages):
    out, path = tmp_path / "out", tmp_path / "r.json"
    # the miniature instead of the real budget
    tiny = fd.Settings(**TINY, caption_stages=caption_stages)
    monkeypatch.setattr(fd, "settings", lambda quick=False, seed=0: tiny)
    result = CliRunner().invoke(
        cli, ["bench", "finedetail", "--json", str(path), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "trained here" in result.output and "MGM" in result.output
    assert "board read" in result.output
    stage1 = "stage 1 (miner + projector, LLM frozen; on the questions)"
    stage2 = "stage 2 (+ LLM; on the questions (x4) and the boards' captions)"
    assert stage1 in result.output
    assert (stage2 in result.output) == bool(caption_stages)
    report = json.loads(path.read_text())
    assert set(report["models"]) == {"lr_only", "hr_tokens", "mgm"}
    for entry in report["models"].values():
        keys = {"fine_acc", "coarse_acc", "visual_tokens", "train_s", "infer_s_per_image"}
        assert keys <= set(entry)
        assert 0 <= entry["fine_acc"] <= 1 and entry["train_s"] > 0
        assert sum(entry["questions"].values()) == 2 * TINY["test_images"]
        if caption_stages:
            assert 0 <= entry["read_acc"] <= 1
        else:
            assert entry["read_acc"] is None
    assert report["seed"] == 0 and report["settings"]["stage2_steps"] == 2
    assert report["models"]["mgm"]["visual_tokens"] == report["models"]["lr_only"]["visual_tokens"]
    assert (out / "report.md").read_text().startswith("# vlmkit fine-detail benchmark")
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_and_bench_come_from_this_plugin():
    import subprocess
    import sys

    assert set(cli.commands["bench"].commands) == {"finedetail", "mining", "serve"}  # serve: vlmkit
    assert cli.commands["demo"].callback.__module__ == "vlmkit_bench.finedetail"
    report = subprocess.run([sys.executable, "-m", "vlmkit", "plugins"], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stderr
    (line,) = [l for l in report.stdout.splitlines() if "(vlmkit-bench " in l]
    assert line.endswith(": command:bench finedetail, command:bench mining, command:demo")
