"""Serving a model to people: ``vlmkit serve`` (OpenAI's chat-completions API over HTTP),
``vlmkit web`` (a Gradio chat page) and ``vlmkit bench serve`` (a load test of the API).

:func:`create_app` builds the FastAPI application around a loaded model; the commands live in the
private modules beside it.
"""

from vlmkit.serve._app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
