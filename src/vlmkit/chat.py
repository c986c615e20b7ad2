"""Interactive chat with a model: :class:`ChatSession`, and the ``vlmkit chat`` and
``vlmkit generate-image`` commands.

A session keeps the conversation and its images. ``/image PATH`` attaches an image to the next
user turn, ``/gen [TEXT]`` asks for an image with Mini-Gemini's protocol (``<GEN>``, then the
answer's ``<h>...</h>`` prompt goes to a bridge and what it returns is saved to a file),
``/reset`` starts over, ``/quit`` ends. Replies are streamed token by token. Problems a user can
cause (a missing or unreadable image, an unknown model, a bridge that cannot load) are reported as
one line; the session goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from vlmkit.bridges.generation import ImageRequest, request_image, save_outputs
from vlmkit.config import check_image_label
from vlmkit.data.conversation import IMAGE_TOKEN
from vlmkit.loading import LoadError, load

DEFAULT_GEN_REQUEST = "Generate an image of what we talked about."
HELP = "commands: /image PATH, /gen [TEXT], /reset, /quit"


class ChatError(ValueError):
    """A problem the user can fix (bad path, unknown model...): shown as one line."""


def open_image(path: str | Path) -> Any:
    """The RGB PIL image at ``path``; :class:`ChatError` if it is missing or not a readable image."""
    from PIL import Image

    from vlmkit.data.processor import load_image

    path = Path(path).expanduser()
    if not path.is_file():
        raise ChatError(f"image file not found: {path}")
    try:
        return load_image(path)
    except Image.DecompressionBombError as err:
        raise ChatError(f"{path}: refused, too many pixels ({err})") from None
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise ChatError(f"{path}: unsupported image format ({type(err).__name__})") from None
    except ValueError as err:  # pixel values outside the range of the image's mode
        raise ChatError(f"{path}: {err}") from None


def make_bridge(model: Any, name: str | None, pipeline: str | None) -> Any:
    """The bridge for ``/gen``: ``name`` (with ``pretrained=pipeline`` for ``diffusers``), else the
    model's bridge slot, else ``diffusers`` when a pipeline is given or the model has none,
    falling back to ``prompt-only`` when the diffusers plugin is not installed."""
    from vlmkit.components import available, create

    if name is None and pipeline is None and getattr(model, "bridge", None) is not None:
        return model.bridge
    if name is None:
        name = "diffusers" if "diffusers" in available("bridge") else "prompt-only"
    kwargs = {"pretrained": pipeline} if pipeline is not None else {}
    try:
        return create("bridge", name, **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise ChatError(str(err)) from None


class ChatSession:
    """A multi-turn conversation with ``model``; images attach to the next user turn."""

    def __init__(
        self,
        model: Any,
        *,
        bridge: Any = None,
        out_dir: str | Path = ".",
        max_new_tokens: int = 128,
        seed: int | None = None,
        steps: int | None = None,
        size: int | None = None,
        image_label: str | None = None,
    ) -> None:
        self.model = model
        self.bridge = bridge
        self.out_dir = Path(out_dir)
        self.max_new_tokens = max_new_tokens
        self.gen_kwargs = {"seed": seed, "steps": steps, "size": size}
        # None: the model config's label for prompts with two or more images ("Image {index}:"
        # for Mini-Gemini, as its CLI writes)
        self.chat_kwargs = {} if image_label is None else {"image_label": image_label}
        self.reset()

    def reset(self) -> None:
        """Forget the conversation and its images."""
        self.messages: list[dict[str, str]] = []
        self.images: list[Any] = []
        self._pending = 0  # images attached since the last user turn
        self._generated = 0

    def add_image(self, image: Any) -> None:
        """Attach an image (a path or a PIL image) to the next user turn."""
        self.images.append(open_image(image) if isinstance(image, (str, Path)) else image)
        self._pending += 1

    def _user_turn(self, text: str) -> dict[str, str]:
        return {"role": "user", "content": (IMAGE_TOKEN + "\n") * self._pending + text}

    def ask(self, text: str, streamer: Any = None) -> str:
        """The model's reply to ``text`` (streamed to ``streamer`` when given); kept in the history."""
        turn = self._user_turn(text)
        try:
            reply = self.model.chat(
                self.images or None, [*self.messages, turn],
                max_new_tokens=self.max_new_tokens, streamer=streamer, **self.chat_kwargs,
            )
        except ValueError as err:  # e.g. a typed "<image>" without an image to go with it
            raise ChatError(str(err)) from None
        self.messages += [turn, {"role": "assistant", "content": reply}]
        self._pending = 0
        return reply

    def generate(self, text: str | None = None, streamer: Any = None) -> tuple[ImageRequest, list[Path]]:
        """Ask for an image (MGM protocol); save what the bridge returns. Returns the request's
        outcome and the paths written (none when the reply has no image prompt)."""
        if self.bridge is None:
            raise ChatError("no bridge to render images with (see --bridge / --pipeline)")
        turn = self._user_turn(text or DEFAULT_GEN_REQUEST)
        try:
            result = request_image(
                self.model, self.images or None, [*self.messages, turn], bridge=self.bridge,
                max_new_tokens=self.max_new_tokens, streamer=streamer, **self.gen_kwargs,
                **self.chat_kwargs,
            )
        except (OSError, ValueError) as err:
            raise ChatError(f"image generation failed: {err}") from None
        self.messages += [turn, {"role": "assistant", "content": result.reply}]
        self._pending = 0
        paths: list[Path] = []
        if result.ok:
            self._generated += 1
            paths = save_outputs(result.outputs, self.out_dir / f"vlmkit-gen-{self._generated}")
        return result, paths


def _streamer(tokenizer: Any) -> Any:
    """A transformers ``TextStreamer`` that writes the reply through click as it is generated."""
    from transformers import TextStreamer

    class EchoStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            click.echo(text, nl=stream_end)

    return EchoStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _handle(session: ChatSession, line: str, streamer: Any) -> bool:
    """Run one input line; False when the session should end."""
    command, _, arg = line.partition(" ")
    arg = arg.strip()
    if command in ("/quit", "/exit"):
        return False
    if command == "/reset":
        session.reset()
        click.echo("(conversation cleared)")
    elif command == "/image":
        if not arg:
            raise ChatError("usage: /image PATH")
        session.add_image(arg)
        click.echo(f"(image attached to your next message: {arg})")
    elif command == "/gen":
        click.echo("model> ", nl=False)
        result, paths = session.generate(arg or None, streamer)
        click.echo(result.message)
        for path in paths:
            click.echo(f"saved {path}")
    elif command.startswith("/"):
        raise ChatError(f"unknown command {command!r}; {HELP}")
    else:
        click.echo("model> ", nl=False)
        session.ask(line, streamer)
    return True


_model_option = click.option(
    "--model", "model_spec", required=True, help="Preset name, config file, saved model dir or MGM dir."
)
_bridge_options = [
    click.option("--bridge", default=None, help="Bridge for images (default: the model's, else diffusers)."),
    click.option("--pipeline", default=None, help="Diffusers pipeline id or local path for the diffusers bridge."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights and images."),
    click.option("--steps", type=int, default=None, help="Denoising steps (default: the bridge's)."),
    click.option("--size", type=int, default=None, help="Image side in pixels (default: the bridge's)."),
]


def _with_bridge_options(f: Any) -> Any:
    for option in reversed(_bridge_options):
        f = option(f)
    return f


def _setup(model_spec: str, images: tuple[str, ...], bridge: str | None, pipeline: str | None,
           seed: int, device: str | None) -> tuple[Any, list[Any], Any]:
    import torch

    torch.manual_seed(seed)
    opened = [open_image(p) for p in images]  # check the files before the (slower) model load
    try:
        model = load(model_spec, device=device, what="--model").eval()
    except LoadError as err:
        raise ChatError(str(err)) from None
    return model, opened, make_bridge(model, bridge, pipeline)


@click.command("chat")
@_model_option
@click.option("--image", "images", multiple=True, help="Image for the first message (repeatable).")
@_with_bridge_options
@click.option("--out-dir", default=".", show_default=True, help="Where /gen saves images.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--image-label", default=None,
              help="Label before each image of a prompt with two or more, '{index}' counting "
                   "from 1 (default: the model's; MGM: 'Image {index}:'; '' for none).")
@click.option("--device", default=None, help="torch device (default: CPU).")
def chat_command(model_spec, images, bridge, pipeline, seed, steps, size, out_dir, max_new_tokens,
                 image_label, device):
    """Chat with a model: streamed replies; /image PATH, /gen [TEXT], /reset, /quit."""
    try:
        if image_label is not None:
            try:
                check_image_label(image_label)
            except ValueError as err:
                raise ChatError(f"--image-label: {err}") from None
        model, opened, bridge_obj = _setup(model_spec, images, bridge, pipeline, seed, device)
        session = ChatSession(model, bridge=bridge_obj, out_dir=out_dir, max_new_tokens=max_new_tokens,
                              seed=seed, steps=steps, size=size, image_label=image_label)
        for image in opened:
            session.add_image(image)
    except ChatError as err:
        _fail(str(err))
        return
    streamer = _streamer(model.llm.tokenizer)
    click.echo(f"vlmkit chat: {model.config.name or model_spec}; {HELP}")
    while True:
        click.echo("you> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            click.echo()
            break
        line = line.strip()
        if not line:
            continue
        try:
            if not _handle(session, line, streamer):
                break
        except ChatError as err:
            click.echo(f"error: {err}")


@click.command("generate-image")
@click.argument("text")
@click.option("--model", "model_spec", default=None,
              help="Ask this model for the image prompt (MGM protocol); without it TEXT is the prompt.")
@click.option("--image", "images", multiple=True, help="Image for the request (repeatable).")
@_with_bridge_options
@click.option("--negative-prompt", default=None)
@click.option("--out", default="vlmkit-image", show_default=True, help="Output path without suffix.")
@click.option("--device", default=None, help="torch device (default: CPU).")
def generate_image_command(text, model_spec, images, bridge, pipeline, seed, steps, size,
                           negative_prompt, out, device):
    """Render an image: from TEXT as the prompt, or from the prompt a --model writes for TEXT."""
    try:
        if model_spec is None:
            if images:
                raise ChatError("--image needs --model (the model reads the image)")
            bridge_obj = make_bridge(None, bridge, pipeline)
            prompt = text
            outputs = bridge_obj(text, negative_prompt=negative_prompt, seed=seed, steps=steps, size=size)
        else:
            model, opened, bridge_obj = _setup(model_spec, images, bridge, pipeline, seed, device)
            result = request_image(
                model, opened or None, [{"role": "user", "content": text}], bridge=bridge_obj,
                negative_prompt=negative_prompt, seed=seed, steps=steps, size=size,
            )
            click.echo(f"reply: {result.reply}")
            if not result.ok:
                _fail(result.message)
                return
            prompt, outputs = result.prompt, result.outputs
    except (ChatError, ValueError, OSError) as err:
        _fail(str(err))
        return
    click.echo(f"image prompt: {prompt}")
    for path in save_outputs(outputs, out):
        click.echo(f"saved {path}")
