"""VQA accuracy: TextVQA-style normalisation, the 10-annotator rule, and `vlmkit eval`."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from vlmkit import loading
from vlmkit.cli import cli
from vlmkit.eval.vqa import evaluate, load_questions, normalize_answer, vqa_accuracy


@pytest.mark.parametrize("raw, expected", [
    ("Two Dogs.", "2 dogs"), ("The Coca-Cola", "coca cola"), ("yes !", "yes"), ("3.5", "3.5"),
    ("10.", "10"), ("1,000", "1000"), ("dont", "don't"), ("  A\tcat\n", "cat"), ("none", "0"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_ten_annotator_rule():
    def answers(n_match):
        return ["2"] * n_match + ["other"] * (10 - n_match)

    # min(#match / 3, 1), averaged over the 10 ways of leaving one annotator out.
    assert vqa_accuracy("two", answers(0)) == 0.0
    assert vqa_accuracy("two", answers(1)) == pytest.approx(0.3)  # 9 subsets x 1/3, 1 x 0
    assert vqa_accuracy("two", answers(2)) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert vqa_accuracy("two", answers(3)) == pytest.approx(0.9)
    assert vqa_accuracy("Two.", answers(4)) == 1.0
    assert vqa_accuracy("cat", ["a cat"]) == 1.0  # fewer than 10: any exact match
    with pytest.raises(ValueError, match="at least one reference"):
        vqa_accuracy("x", [])


class _Stub:
    def __init__(self):
        self.seen = []

    def chat(self, images, messages, max_new_tokens):
        self.seen.append((images, messages[0]["content"]))
        return "Two."


def test_eval_command(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    questions = [
        {"question_id": 1, "image": "a.png", "text": "How many?", "answers": ["2"] * 10},
        {"question_id": 2, "image": "a.png", "text": "Colour?", "answers": ["red"] * 10},
        {"question_id": 3, "image": "missing.png", "text": "Hm?", "answers": ["2"] * 10},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    stub = _Stub()
    monkeypatch.setattr(loading, "load", lambda source, **_: stub)
    out = tmp_path / "pred.jsonl"
    result = CliRunner().invoke(cli, ["eval", "any", "--questions", str(path), "--output", str(out),
                                      "--prompt-suffix", "\\nShort answer."])
    assert result.exit_code == 0, result.output
    assert "VQA accuracy: 50.00% over 2 question(s), 1 skipped" in result.output
    assert "missing.png" in result.output and "eval" in result.output  # skip report, progress bar
    assert [json.loads(x)["accuracy"] for x in out.read_text().splitlines()] == [1.0, 0.0]
    assert stub.seen[0][1] == "How many?\nShort answer." and len(stub.seen[0][0]) == 1


def test_questions_from_conversations(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"id": "x", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]}]))
    (q,) = load_questions(path)
    assert q == {"question_id": "x", "image": "a.png", "question": "<image>\nWhat?",
                 "answers": ["A cat."]}
    report = evaluate(_Stub(), [dict(q, image=None, answers=["two"])], None, progress=False)
    assert report["accuracy"] == 1.0


def test_eval_runs_a_saved_tiny_model(tmp_path):
    import torch

    import vlmkit

    torch.manual_seed(0)
    vlmkit.build("mgm-tiny").save_pretrained(tmp_path / "model")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    (tmp_path / "q.jsonl").write_text(json.dumps(
        {"question_id": 7, "image": "a.png", "text": "Colour?", "answers": ["red"] * 10}) + "\n")
    out = tmp_path / "pred.jsonl"
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "model"), "--questions",
                                      str(tmp_path / "q.jsonl"), "--max-new-tokens", "4",
                                      "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "over 1 question(s), 0 skipped" in result.output
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["question_id"] == 7 and isinstance(row["prediction"], str)
    assert row["accuracy"] == vqa_accuracy(row["prediction"], ["red"] * 10)
