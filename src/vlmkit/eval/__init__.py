"""Evaluation: metrics and benchmarks that score a model's answers.

- :mod:`vlmkit.eval.vqa`: VQA accuracy (TextVQA-style answer normalisation, the 10-annotator rule)
  of a model on a LLaVA-format question file, and the ``vlmkit eval`` command.
"""

from vlmkit.eval.vqa import evaluate, load_questions, normalize_answer, vqa_accuracy

__all__ = ["evaluate", "load_questions", "normalize_answer", "vqa_accuracy"]
