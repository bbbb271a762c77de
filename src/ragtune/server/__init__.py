"""`ragtune serve`: the FastAPI app (app.py), keys and limits (auth.py), REST (rest.py), OpenAI-compatible API
(openai_api.py), sync jobs (jobs.py), and the chat / admin / widget pages (static/). Needs the `server` extra."""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
