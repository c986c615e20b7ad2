"""``vlmkit eval``: VQA accuracy (TextVQA-style) of a model on a LLaVA-format question file.

Answers are normalised as the VQA/TextVQA evaluators do: lower case, punctuation removed (a
period only when no digit follows it, a comma only when it is not a thousands separator),
number words to digits, articles dropped, common contractions restored. A prediction scores by
the 10-annotator rule: ``min(#annotators who gave it / 3, 1)``, averaged over the 10 ways of
leaving one annotator out (the official evaluators' form). With fewer than 10 reference answers a
prediction scores 1 when it matches any of them.

Question records: ``{"question_id" | "id", "image", "text" | "question" | "conversations",
"answers": [str, ...]}`` in JSON or JSON lines; with ``conversations`` the first human turn is the
question and the first gpt turn the single reference answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import click

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
CONTRACTIONS = {
    "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't",
    "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't",
    "hes": "he's", "im": "i'm", "isnt": "isn't", "itll": "it'll", "ive": "i've", "lets": "let's",
    "shouldnt": "shouldn't", "thats": "that's", "theres": "there's", "theyre": "they're",
    "wasnt": "wasn't", "werent": "weren't", "whats": "what's", "wont": "won't",
    "wouldnt": "wouldn't", "youre": "you're", "youve": "you've",
}
PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!*#%^&$:'~|"
_DECIMAL_PERIOD = re.compile(r"\.(?!\d)")
_THOUSANDS_COMMA = re.compile(r"(\d)(,)(\d)")


def normalize_answer(answer: str) -> str:
    """An answer in the form the VQA evaluators compare (``"Two Dogs."`` → ``"2 dogs"``)."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _THOUSANDS_COMMA.sub(r"\1\3", text)
    for mark in PUNCTUATION:
        if mark not in text:
            continue
        # Next to a space the mark is deleted ("yes !" -> "yes"); otherwise it becomes a space
        # ("left-hand" -> "left hand"), as in the VQA evaluator.
        if f"{mark} " in text or f" {mark}" in text:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    text = _DECIMAL_PERIOD.sub("", text)
    words = []
    for word in text.split():
        word = NUMBER_WORDS.get(word, word)
        if word in ARTICLES:
            continue
        words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA score in [0, 1] of ``prediction`` against the annotators' ``answers``."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    pred = normalize_answer(prediction)
    refs = [normalize_answer(a) for a in answers]
    if len(refs) < 10:
        return float(pred in refs)
    scores = []
    for left_out in range(len(refs)):
        matches = sum(1 for i, ref in enumerate(refs) if i != left_out and ref == pred)
        scores.append(min(matches / 3.0, 1.0))
    return sum(scores) / len(scores)


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    """Question records as ``{"question_id", "image", "question", "answers"}``."""
    from vlmkit.data.llava import load_records

    out = []
    for i, record in enumerate(load_records(path)):
        qid = record.get("question_id", record.get("id", i))
        question = record.get("text", record.get("question"))
        answers = record.get("answers")
        turns = record.get("conversations")
        if question is None and isinstance(turns, list):
            turns = [t for t in turns if isinstance(t, dict)]
            question = next((t.get("value") for t in turns if t.get("from") in ("human", "user")),
                            None)
            if answers is None:
                answers = [t.get("value") for t in turns if t.get("from") in ("gpt", "assistant")][:1]
        if not isinstance(question, str):
            raise ValueError(f"{path}: question {qid!r} has no 'text', 'question' or human turn")
        if isinstance(answers, str):
            answers = [answers]
        if answers is not None and (not isinstance(answers, list)
                                    or not all(isinstance(a, str) for a in answers)):
            raise ValueError(f"{path}: question {qid!r}: 'answers' must be a list of strings, "
                             f"got {answers!r}")
        out.append({"question_id": qid, "image": record.get("image"), "question": question,
                    "answers": list(answers or [])})
    return out


def evaluate(model: Any, questions: list[dict[str, Any]], image_folder: str | Path | None, *,
             prompt_suffix: str = "", max_new_tokens: int = 16, progress: bool = True) -> dict[str, Any]:
    """Answer every question with ``model.chat`` and score it; returns ``{"accuracy", "results",
    "skipped"}``. A question whose image cannot be read (or is not a path), or that does not fit
    the LLM's context, is skipped (with its path and the reason) and counted."""
    from PIL import Image
    from tqdm.auto import tqdm

    from vlmkit.data.processor import load_image

    folder = Path(image_folder) if image_folder is not None else None
    results, skipped = [], []
    bar = tqdm(questions, desc="eval", unit="q", disable=not progress, dynamic_ncols=True)
    total = 0.0
    for q in bar:
        images = None
        if q["image"] is not None:
            if not isinstance(q["image"], str) or not q["image"]:
                skipped.append({"question_id": q["question_id"], "path": repr(q["image"]),
                                "error": "'image' must be a path"})
                continue
            path = Path(q["image"])
            path = folder / path if folder is not None and not path.is_absolute() else path
            try:
                images = [load_image(path)]
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                skipped.append({"question_id": q["question_id"], "path": str(path), "error": str(err)})
                continue
        try:
            prediction = model.chat(images, [{"role": "user", "content": q["question"] + prompt_suffix}],
                                    max_new_tokens=max_new_tokens)
        except ValueError as err:  # e.g. a question longer than the LLM's context
            skipped.append({"question_id": q["question_id"], "path": str(q["image"]), "error": str(err)})
            continue
        score = vqa_accuracy(prediction, q["answers"]) if q["answers"] else None
        if score is not None:
            total += score
        results.append({"question_id": q["question_id"], "prediction": prediction, "accuracy": score})
        scored = sum(r["accuracy"] is not None for r in results)
        bar.set_postfix(acc=f"{total / scored:.3f}" if scored else "-", refresh=False)
    scored = [r["accuracy"] for r in results if r["accuracy"] is not None]
    return {"accuracy": sum(scored) / len(scored) if scored else None, "results": results,
            "skipped": skipped}


@click.command("eval")
@click.argument("model")
@click.option("--questions", required=True, help="LLaVA-format question file with answers.")
@click.option("--image-folder", default=None, help="Folder that image paths resolve against.")
@click.option("--output", default=None, help="Write per-question predictions here (JSON lines).")
@click.option("--prompt-suffix", default="", help="Text appended to every question, e.g. "
              "'\\nAnswer the question using a single word or phrase.'")
@click.option("--max-new-tokens", type=int, default=16, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def eval_command(model: str, questions: str, image_folder: str | None, output: str | None,
                 prompt_suffix: str, max_new_tokens: int, no_progress: bool) -> None:
    """VQA accuracy of MODEL (a saved model directory, preset or config) on a question file."""
    from vlmkit.loading import load

    try:
        items = load_questions(questions)
        vlm = load(model, what="MODEL")
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from None
    folder = image_folder if image_folder is not None else str(Path(questions).parent)
    report = evaluate(vlm, items, folder, prompt_suffix=prompt_suffix.replace("\\n", "\n"),
                      max_new_tokens=max_new_tokens, progress=not no_progress)
    if output:
        Path(output).write_text("".join(json.dumps(r) + "\n" for r in report["results"]))
    for s in report["skipped"]:
        click.echo(f"skipped question {s['question_id']!r}: image {s['path']}: {s['error']}", err=True)
    accuracy = report["accuracy"]
    shown = "n/a (no reference answers)" if accuracy is None else f"{100 * accuracy:.2f}%"
    click.echo(f"VQA accuracy: {shown} over {len(report['results'])} question(s), "
               f"{len(report['skipped'])} skipped")
