"""The comparison on the server: a bot's latest `ragtune compare` run and the advisor's recommendation (for the
admin page's "Strategy" section), its runs, and a run's HTML report. Runs are made with the CLI (they take
minutes to hours); the server only reads them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from ..errors import ConfigError

router = APIRouter(prefix="/api")

# The report styles itself inline and runs no script; nothing may be loaded from anywhere.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; frame-ancestors 'none'"


def _services(request: Request):
    return request.app.state.services


def _principal(request: Request):
    return request.state.principal


def _profile(bot) -> dict[str, Any]:
    """The bot's saved advisor profile (settings key `advisor_profile`), else an empty one (all assumed)."""
    saved = bot.settings.get("advisor_profile")
    return dict(saved) if isinstance(saved, dict) else {}


@router.get("/bots/{bot}/comparison", tags=["comparison"],
            summary="the latest complete comparison run and the recommendation it supports")
def comparison(bot: str, run: str | None = Query(None, description="a run id (default: the latest complete run)"),
               s=Depends(_services), who=Depends(_principal)):
    from ..advisor import advise
    from ..evaluate.compare import latest_complete_run, list_runs, open_run, summary

    b = s.bot(who, bot)
    chosen = open_run(s.store, b, run) if run else latest_complete_run(s.store, b)
    if chosen is not None and chosen["status"] != "complete":
        raise ConfigError(f"run {run} is {chosen['status']}, not complete: its figures are partial")
    try:
        advice = advise(_profile(b), chosen)
    except ConfigError as exc:  # a saved profile with a value this version does not know
        advice = {"error": str(exc)}
    runs = [{"id": r["id"], "status": r["status"], "started_at": r["started_at"], "finished_at": r["finished_at"]}
            for r in list_runs(s.store, b, 10)]
    return {"run": summary(chosen) if chosen else None, "recommendation": advice, "runs": runs}


@router.get("/bots/{bot}/runs/{run_id}/report", tags=["comparison"], response_class=HTMLResponse,
            summary="a comparison run's self-contained HTML report")
def report(bot: str, run_id: str, s=Depends(_services), who=Depends(_principal)):
    from ..evaluate.compare import open_run
    from ..evaluate.report import render_report

    run = open_run(s.store, s.bot(who, bot), run_id)
    return HTMLResponse(render_report(run), headers={"content-security-policy": REPORT_CSP,
                                                     "x-content-type-options": "nosniff",
                                                     "referrer-policy": "no-referrer"})
