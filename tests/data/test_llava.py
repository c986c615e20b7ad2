"""LLaVA-format data: ids/labels/pixels per record, bad images and overlong samples skipped and
reported with path and id, truncation never cutting into visual tokens, the synthetic writer."""

import json
import logging

import pytest
import torch
from PIL import Image

import vlmkit
from vlmkit.data.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX, build_example
from vlmkit.data.llava import LlavaDataset, load_records, to_messages, write_synthetic


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmkit.build("mgm-tiny")


def _record(i, image=None, answer="A red square."):
    record = {"id": f"s{i}", "conversations": [
        {"from": "human", "value": ("<image>\n" if image is not None else "") + "What is it?"},
        {"from": "gpt", "value": answer}]}
    if image is not None:
        record["image"] = image
    return record


def test_item_matches_build_example_and_processor(model, tmp_path):
    Image.new("RGB", (30, 20), "red").save(tmp_path / "a.png")
    ds = LlavaDataset([_record(0, "a.png")], tmp_path, model)
    item = ds[0]
    messages = [{"role": "user", "content": "<image>\nWhat is it?"},
                {"role": "assistant", "content": "A red square."}]
    expected = build_example(messages, model.llm.tokenizer, model.config.chat_template)
    assert torch.equal(item["input_ids"], expected["input_ids"])
    assert torch.equal(item["labels"], expected["labels"])
    assert int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 1
    with Image.open(tmp_path / "a.png") as image:
        pixels = model.processor([image.convert("RGB")])
    assert torch.equal(item["pixels"]["lr"], pixels["lr"])
    assert torch.equal(item["pixels"]["hr"], pixels["hr"])
    assert item["id"] == "s0"
    supervised = model.llm.tokenizer.decode(item["labels"][item["labels"] != IGNORE_INDEX])
    assert supervised == " A red square.</s>"


def test_text_only_and_inline_images_and_missing_tag(model, tmp_path):
    records = [_record(0), {"id": "pil", "image": [Image.new("RGB", (8, 8), "blue")] * 2,
                            "conversations": [{"from": "human", "value": "Compare."},
                                              {"from": "gpt", "value": "Same."}]}]
    ds = LlavaDataset(records, None, model, template="plain")
    assert ds[0]["pixels"] is None
    item = ds[1]
    assert int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 2  # tags put before the question
    assert item["pixels"]["hr"].shape[0] == 2


def test_missing_and_corrupt_images_are_skipped_with_path_and_id(model, tmp_path, caplog):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([_record(0, "ok.png"), _record(1, "gone.png"), _record(2, "bad.png")]))
    ds = LlavaDataset(data, None, model)  # the image folder defaults to the JSON's folder
    with caplog.at_level(logging.WARNING, logger="vlmkit.data.llava"):
        items = [ds[i] for i in range(3)]
    assert items[0] is not None and items[1] is None and items[2] is None
    assert sorted(ds.skipped) == [1, 2]
    assert ds.skipped[1].id == "s1" and ds.skipped[1].path == str(tmp_path / "gone.png")
    assert "not found" in ds.skipped[1].reason
    assert ds.skipped[2].id == "s2" and ds.skipped[2].path == str(tmp_path / "bad.png")
    assert "unreadable" in ds.skipped[2].reason
    assert "s1" in caplog.text and str(tmp_path / "gone.png") in caplog.text
    assert "s2" in caplog.text and str(tmp_path / "bad.png") in caplog.text
    ds[1]
    assert len(ds.skipped) == 2  # counted once, not per visit


def test_bad_conversations_are_skipped(model):
    records = [{"id": "roles", "conversations": [{"from": "gpt", "value": "hi"}]},
               {"id": "tags", "conversations": [{"from": "human", "value": "<image><image> x"},
                                                {"from": "gpt", "value": "y"}]}]
    ds = LlavaDataset(records, None, model)
    assert ds[0] is None and ds[1] is None
    assert "expected 'user'" in ds.skipped[0].reason
    assert "2 <image> tag(s) but 0 image(s)" in ds.skipped[1].reason


def test_truncation_never_cuts_into_visual_tokens(model):
    image = Image.new("RGB", (8, 8))
    t = model.num_visual_tokens
    long_answer = "word " * 40
    record = {"id": "long", "image": image, "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": long_answer}]}
    # "plain": BOS, the image, then the supervised caption (one token per byte here).
    kw = {"template": "plain"}
    full = LlavaDataset([record], None, model, **kw)[0]
    assert len(full["input_ids"]) - 1 + t > t + 60
    # Room for the image and some text: cut at the end, visual block intact.
    ds = LlavaDataset([record], None, model, max_length=t + 60, **kw)
    item = ds[0]
    assert len(item["input_ids"]) - 1 + t == t + 60
    assert torch.equal(item["input_ids"], full["input_ids"][: len(item["input_ids"])])
    # The cut would fall inside the visual block: dropped and counted, or an error.
    ds = LlavaDataset([record], None, model, max_length=t // 2, **kw)
    assert ds[0] is None and "visual tokens" in ds.skipped[0].reason
    with pytest.raises(ValueError, match="long.*cut into a block of visual tokens"):
        LlavaDataset([record], None, model, max_length=t // 2, truncation="error", **kw)[0]
    # Nothing to learn from left after the cut (only the prompt fits).
    prompt_only = len(full["input_ids"]) - int((full["labels"] != IGNORE_INDEX).sum()) - 1 + t
    assert prompt_only == 1 + t
    ds = LlavaDataset([record], None, model, max_length=prompt_only, **kw)
    assert ds[0] is None and "no assistant tokens" in ds.skipped[0].reason


def test_load_records_jsonl_and_errors(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": 1, "conversations": []}\n\n{"id": 2, "conversations": []}\n')
    assert [r["id"] for r in load_records(path)] == [1, 2]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_records(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text('{"id": 1}')
    with pytest.raises(ValueError, match="list of records"):
        load_records(tmp_path / "x.json")
    with pytest.raises(ValueError, match="turn 0"):
        to_messages({"conversations": [{"from": "robot", "value": "x"}]}, 0)


def test_write_synthetic_loads_and_lengths(model, tmp_path):
    path = write_synthetic(tmp_path, n=8)
    ds = LlavaDataset(path, None, model)
    items = [ds[i] for i in range(len(ds))]
    assert all(item is not None for item in items) and not ds.skipped
    assert sum(item["pixels"] is None for item in items) == 2  # every fourth is text-only
    lengths = ds.lengths()
    assert all((lengths[i] > model.num_visual_tokens) == (items[i]["pixels"] is not None)
               for i in range(8))
