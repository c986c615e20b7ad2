"""Mini-Gemini's generation protocol (``request_image``) and saving bridge outputs.

The model here is a recording stand-in for ``VisionLanguageModel.chat``: these tests check the
protocol around the model (``<GEN>`` appended, the last ``<h>`` pair taken, the bridge called with
it, no crash without one). ``tests/test_chat.py`` runs the same path on a real trained tiny model.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import vlmkit
from vlmkit.bridges import NO_IMAGE_PROMPT, request_image, save_outputs


class ScriptedModel:
    def __init__(self, reply: str, bridge=None):
        self.reply, self.bridge, self.calls = reply, bridge, []

    def chat(self, images, messages, **kwargs):
        self.calls.append((images, messages, kwargs))
        return self.reply


class RecordingBridge:
    def __init__(self):
        self.calls = []

    def __call__(self, prompt, **kwargs):
        self.calls.append((prompt, kwargs))
        return [Image.new("RGB", (8, 8), "red")]


def test_appends_gen_and_renders_the_last_prompt():
    bridge = RecordingBridge()
    model = ScriptedModel("Sure. <h>a cat</h> or rather <h> a red cube </h>")
    messages = [{"role": "user", "content": "<image>\nDraw it."}]
    result = request_image(model, "IMG", messages, bridge=bridge, seed=3, steps=2, size=8,
                           max_new_tokens=5)
    images, sent, kwargs = model.calls[0]
    assert images == "IMG" and kwargs == {"max_new_tokens": 5}
    assert sent[-1]["content"] == "<image>\nDraw it. <GEN>"
    assert messages[0]["content"] == "<image>\nDraw it."  # the caller's list is not changed
    assert bridge.calls == [("a red cube", {"negative_prompt": None, "seed": 3, "steps": 2, "size": 8})]
    assert result.ok and result.prompt == "a red cube" and len(result.outputs) == 1
    assert result.message == "image prompt: a red cube"


@pytest.mark.parametrize("reply", ["I cannot draw.", "<h> </h>", "<h>unterminated", ""])
def test_no_image_prompt_is_a_result_not_a_crash(reply):
    bridge = RecordingBridge()
    result = request_image(ScriptedModel(reply), None, [{"role": "user", "content": "Draw."}], bridge=bridge)
    assert not result.ok and result.prompt is None and result.outputs == []
    assert result.reply == reply and result.message == NO_IMAGE_PROMPT
    assert bridge.calls == []


def test_bridge_comes_from_the_model_or_is_required():
    bridge = RecordingBridge()
    result = request_image(ScriptedModel("<h>x</h>", bridge=bridge), None, [{"role": "user", "content": "a"}])
    assert result.prompt == "x" and len(bridge.calls) == 1
    with pytest.raises(ValueError, match="needs a bridge.*prompt-only"):
        request_image(ScriptedModel("<h>x</h>"), None, [{"role": "user", "content": "a"}])


def test_prompt_only_bridge():
    bridge = vlmkit.create("bridge", "prompt-only")
    assert bridge("  a red cube ", seed=1, steps=3, size=64, negative_prompt="blur") == ["a red cube"]
    with pytest.raises(ValueError, match="non-empty image prompt"):
        bridge(" ")


def test_save_outputs(tmp_path):
    paths = save_outputs([Image.new("RGB", (4, 4), "blue"), "a prompt"], tmp_path / "sub" / "out")
    assert [p.name for p in paths] == ["out.png", "out-1.txt"]
    assert Image.open(paths[0]).getpixel((0, 0)) == (0, 0, 255)
    assert paths[1].read_text() == "a prompt\n"
    with pytest.raises(TypeError, match="int"):
        save_outputs([3], tmp_path / "x")


_text = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=20)


@given(before=_text, earlier=_text, prompt=_text.filter(lambda t: t.strip()), after=_text)
def test_the_last_pair_is_the_prompt(before, earlier, prompt, after):
    bridge = RecordingBridge()
    reply = f"{before}<h>{earlier}</h>{before}<h>{prompt}</h>{after}"
    result = request_image(ScriptedModel(reply), None, [{"role": "user", "content": "x"}], bridge=bridge)
    assert result.prompt == prompt.strip() and bridge.calls[0][0] == prompt.strip()
