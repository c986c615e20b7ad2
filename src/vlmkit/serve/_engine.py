"""Queued, batched generation on one model: requests wait up to ``max_wait_ms`` for company, then
up to ``max_batch`` of them with the same sampling settings are generated together with the
model's left-padded batched :meth:`~vlmkit.model.VisionLanguageModel.generate`.

One worker thread runs the model. Per-row stopping (end of sequence, ``stop`` strings, the row's
own ``max_tokens``, a client that went away) is a ``StoppingCriteria`` that is called after every
decoding step; it also hands each row's new text to the waiting request, so streaming and batching
go together. A request with a ``seed`` is generated on its own, so its answer depends on the seed
alone.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from vlmkit._prompt import chat_prompt_ids
from vlmkit.data.conversation import extract_image_prompt, get_template
from vlmkit.serve._errors import APIError


@dataclass
class Job:
    """One request in the queue: its token ids, images, settings and the channel back to it."""

    ids: list[int]
    images: list[Any]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    prompt_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    text_sent: str = ""
    finish_reason: str | None = None
    cancelled: bool = False

    @property
    def batch_key(self) -> tuple[Any, ...]:
        if self.seed is not None:
            return ("seed", id(self))
        if self.temperature == 0.0:
            return ("greedy",)
        return ("sample", self.temperature, self.top_p)

    def send(self, event: tuple[Any, ...]) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class QueueFull(APIError):
    def __init__(self, max_queue: int, retry_after: int) -> None:
        super().__init__(
            503,
            f"the server is busy: {max_queue} requests are already waiting "
            "(--max-queue); retry later",
            type="server_busy",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )


class Engine:
    """The queue and the worker thread in front of ``model``."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        bridge: Any = None,
    ) -> None:
        self.model = model
        self.bridge = bridge
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.template = get_template(model.config.chat_template)
        tok = model.llm.tokenizer
        self.tokenizer = tok
        self.stop_ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        if self.template.stop_str:
            stop = tok.convert_tokens_to_ids(self.template.stop_str)
            if isinstance(stop, int) and stop != tok.unk_token_id:
                self.stop_ids.add(stop)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.context_length = int(
            getattr(model.llm.model.config, "max_position_embeddings", 0) or 2048
        )
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="vlmkit-serve-engine", daemon=True)
        self.batches: list[int] = []  # size of each batch run, for tests and the load test
        self._thread.start()

    # ------------------------------------------------------------------ requests
    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` as :meth:`~vlmkit.model.VisionLanguageModel.chat` builds them:
        the model's chat template, its image labels when there are several images, ``<image>`` as
        placeholders."""
        label = getattr(self.model.config, "image_label", "") or ""
        return chat_prompt_ids(messages, self.tokenizer, self.template, image_label=label)

    def submit(self, job: Job) -> None:
        """Queue ``job``; :class:`QueueFull` (503) when ``max_queue`` requests already wait."""
        with self._cond:
            if self._closing:
                raise APIError(
                    503, "the server is shutting down", type="server_busy", code="shutting_down"
                )
            if len(self._queue) >= self.max_queue:
                raise QueueFull(self.max_queue, retry_after=1)
            self._queue.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Free ``job``'s place: out of the queue, or stopped at the next decoding step."""
        with self._cond:
            job.cancelled = True
            try:
                self._queue.remove(job)
            except ValueError:
                pass

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking requests; the worker finishes those queued and running, then ends."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker
    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait
            key = self._queue[0].batch_key
            while True:
                same = [j for j in self._queue if j.batch_key == key]
                remaining = deadline - time.monotonic()
                if len(same) >= self.max_batch or remaining <= 0 or self._closing:
                    break
                self._cond.wait(remaining)
            batch = same[: self.max_batch]
            for job in batch:
                self._queue.remove(job)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            batch = [j for j in batch if not j.cancelled]
            if not batch:
                continue
            self.batches.append(len(batch))
            try:
                self._generate(batch)
            except Exception as err:  # noqa: BLE001 - every waiting request must hear back
                failure = APIError(
                    500,
                    f"generation failed: {type(err).__name__}: {err}",
                    type="server_error",
                    code="generation_failed",
                )
                for job in batch:
                    job.send(("error", failure))

    def _generate(self, batch: list[Job]) -> None:
        width = max(len(j.ids) for j in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, job in enumerate(batch):
            ids[row, width - len(job.ids) :] = torch.tensor(job.ids)
            mask[row, width - len(job.ids) :] = 1
        images = [image for job in batch for image in job.images]
        first = batch[0]
        kwargs: dict[str, Any] = {"do_sample": False}
        if first.temperature > 0:
            kwargs = {
                "do_sample": True,
                "temperature": first.temperature,
                "top_p": first.top_p,
                "top_k": 0,
            }
        if first.seed is not None:
            torch.manual_seed(first.seed)
        from transformers import StoppingCriteriaList

        self.model.generate(
            ids,
            images=images or None,
            attention_mask=mask,
            max_new_tokens=max(j.max_tokens for j in batch),
            eos_token_id=sorted(self.stop_ids) or None,
            stopping_criteria=StoppingCriteriaList([_RowStop(batch, self._step)]),
            **kwargs,
        )
        for job in batch:
            if job.finish_reason is None:
                job.finish_reason = "length"
            self._finish(job)

    def _step(self, job: Job, token: int) -> None:
        """One new token for ``job`` (called by :class:`_RowStop` in the worker thread)."""
        if token in self.stop_ids:
            job.finish_reason = "stop"
            return
        job.tokens.append(token)
        text = self._text(job, cut=False)
        if any(stop in text for stop in job.stop):
            job.finish_reason = "stop"
            return
        if len(job.tokens) >= job.max_tokens:
            job.finish_reason = "length"
            return
        visible = text.rstrip()
        for stop in job.stop:  # hold back a tail that may become a stop string
            for n in range(min(len(stop) - 1, len(visible)), 0, -1):
                if visible.endswith(stop[:n]):
                    visible = visible[:-n]
                    break
        if visible.endswith("\ufffd"):  # an incomplete multi-byte character
            return
        if len(visible) > len(job.text_sent) and visible.startswith(job.text_sent):
            job.send(("delta", visible[len(job.text_sent) :]))
            job.text_sent = visible

    def _text(self, job: Job, cut: bool = True) -> str:
        """The reply so far: decoded, leading space dropped, cut at the template's stop string and
        (with ``cut``) at the request's."""
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=True).lstrip()
        for stop in [self.template.stop_str or "", *(job.stop if cut else ())]:
            if stop and stop in text:
                text = text[: text.index(stop)]
        return text

    def _finish(self, job: Job) -> None:
        if job.cancelled:
            return
        text = self._text(job).rstrip()
        if text.startswith(job.text_sent) and len(text) > len(job.text_sent):
            job.send(("delta", text[len(job.text_sent) :]))
        images = self._render(text, job.seed) if self.bridge is not None else []
        job.send(("done", text, job.finish_reason, len(job.tokens), images))

    def _render(self, text: str, seed: int | None) -> list[Any]:
        prompt = extract_image_prompt(text)
        if prompt is None:
            return []
        outputs = self.bridge(prompt, seed=seed)
        return [o for o in outputs if hasattr(o, "save")]


class _RowStop:
    """Per-row stopping for ``generate``; feeds each row's new token to ``step`` first."""

    def __init__(self, batch: list[Job], step: Callable[[Job, int], None]) -> None:
        self.batch = batch
        self.step = step

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        done = []
        for job, token in zip(self.batch, last):
            if job.finish_reason is None and not job.cancelled:
                self.step(job, token)
            done.append(job.finish_reason is not None or job.cancelled)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
