"""The HTML report of a compare run: one self-contained file (inline CSS and SVG charts, no script, nothing
loaded from anywhere) with each metric per strategy, latency distributions, the freshness result and every
strategy's answer and citations side by side. Every piece of text is escaped: answers and documents are data."""

from __future__ import annotations

import math
import time
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError

COLORS = {"base": "#8a8f98", "rag": "#2f6fdb", "finetune": "#e07b1f", "hybrid": "#2e9e5b"}
_EXTRA = ("#9b59b6", "#c0392b", "#16a085", "#7f8c8d")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.meta{color:#5b6472;font-size:13px}.warn{background:#fff3cd;border:1px solid #e0c36a;padding:10px 14px;border-radius:6px;
margin:14px 0}.bad{background:#fde2e1;border-color:#e6a3a0}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}th,td{border:1px solid #dde1e7;padding:6px 8px;
vertical-align:top;text-align:left}th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:14px}.chart{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px}
.ok{color:#1f7a3f;font-weight:600}.no{color:#b42318;font-weight:600}.abst{color:#7a5b00;font-weight:600}
.ans{white-space:pre-wrap;word-break:break-word;max-height:180px;overflow:auto}.cite{color:#5b6472;font-size:12px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
details{margin:6px 0}code{background:#eef1f5;padding:1px 4px;border-radius:3px}
"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _color(name: str, i: int) -> str:
    return COLORS.get(name, _EXTRA[i % len(_EXTRA)])


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


# --------------------------------------------------------------------------- charts
def bar_chart(title: str, values: Mapping[str, float | None], fmt=_pct, scale: float | None = None,
              note: str = "") -> str:
    """Horizontal bars, one per strategy, labelled with the value (n/a where there is none)."""
    names = list(values)
    width, label_w, bar_h, gap, top = 330, 78, 20, 7, 26
    height = top + len(names) * (bar_h + gap) + (16 if note else 4)
    finite = [v for v in values.values() if v is not None]
    top_value = scale if scale is not None else (max(finite) if finite else 1.0) or 1.0
    span = width - label_w - 60
    parts = [f'<svg width="{width}" height="{height}" role="img" '
             f'aria-label="{e(title)}"><text x="0" y="15" font-size="13" font-weight="600">{e(title)}</text>']
    for i, name in enumerate(names):
        y = top + i * (bar_h + gap)
        v = values[name]
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{e(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{span}" height="{bar_h}" fill="#eef1f5"/>')
        if v is not None:
            w = max(1.0, span * min(1.0, v / top_value)) if top_value else 1.0
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_color(name, i)}"/>')
        parts.append(f'<text x="{label_w + span + 6}" y="{y + 14}" font-size="12">{e(fmt(v))}</text>')
    if note:
        parts.append(f'<text x="0" y="{height - 4}" font-size="11" fill="#5b6472">{e(note)}</text>')
    parts.append("</svg>")
    return f'<div class="chart">{"".join(parts)}</div>'


def grouped_chart(title: str, groups: Mapping[str, Mapping[str, float | None]], series: Sequence[str],
                  fmt=_pct, scale: float | None = None) -> str:
    """Per strategy a small group of bars (e.g. before / after the change)."""
    shades = ["#2f6fdb", "#e07b1f", "#2e9e5b", "#8a8f98"]
    names = list(groups)
    width, label_w, bar_h, top = 520, 78, 14, 40
    row_h = bar_h * len(series) + 10
    height = top + len(names) * row_h + 4
    finite = [v for g in groups.values() for v in g.values() if v is not None]
    top_value = scale if scale is not None else (max(finite) if finite else 1.0) or 1.0
    span = width - label_w - 70
    parts = [f'<svg width="{width}" height="{height}" role="img" '
             f'aria-label="{e(title)}"><text x="0" y="15" font-size="13" font-weight="600">{e(title)}</text>']
    for j, s in enumerate(series):
        parts.append(f'<rect x="{label_w + j * 150}" y="22" width="10" height="10" fill="{shades[j % 4]}"/>'
                     f'<text x="{label_w + j * 150 + 14}" y="31" font-size="11">{e(s)}</text>')
    for i, name in enumerate(names):
        y0 = top + i * row_h
        parts.append(f'<text x="0" y="{y0 + bar_h + 2}" font-size="12">{e(name)}</text>')
        for j, s in enumerate(series):
            v = groups[name].get(s)
            y = y0 + j * bar_h
            parts.append(f'<rect x="{label_w}" y="{y}" width="{span}" height="{bar_h - 2}" fill="#eef1f5"/>')
            if v is not None:
                w = max(1.0, span * min(1.0, v / top_value)) if top_value else 1.0
                parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{shades[j % 4]}"/>')
            parts.append(f'<text x="{label_w + span + 6}" y="{y + 10}" font-size="11">{e(fmt(v))}</text>')
    parts.append("</svg>")
    return f'<div class="chart">{"".join(parts)}</div>'


def latency_chart(latencies: Mapping[str, Sequence[float]], p50: Mapping[str, float | None],
                  p95: Mapping[str, float | None]) -> str:
    """Every answer's latency as a dot per strategy on a log axis, with p50 (solid) and p95 (dashed) marks."""
    names = [n for n in latencies if latencies[n]]
    if not names:
        return "<p>No latencies recorded.</p>"
    values = [v for n in names for v in latencies[n] if v > 0]
    lo = 10 ** math.floor(math.log10(max(0.1, min(values) if values else 1)))
    hi = 10 ** math.ceil(math.log10(max(values) if values else 10))
    if hi <= lo:
        hi = lo * 10
    width, label_w, row_h, top = 720, 78, 34, 28
    span = width - label_w - 20
    height = top + len(names) * row_h + 28

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return label_w + span * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    parts = [f'<svg width="{width}" height="{height}" role="img" '
             'aria-label="latency per answer"><text x="0" y="15" font-size="13" font-weight="600">'
             'Latency of each answer (ms, log scale; solid = p50, dashed = p95)</text>']
    tick = lo
    while tick <= hi * 1.0001:
        tx = x(tick)
        parts.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - 22}" stroke="#dde1e7"/>'
                     f'<text x="{tx:.1f}" y="{height - 8}" font-size="11" text-anchor="middle">{tick:,.{1 if tick < 1 else 0}f}</text>')
        tick *= 10
    for i, name in enumerate(names):
        y = top + i * row_h + row_h / 2
        color = _color(name, i)
        parts.append(f'<text x="0" y="{y + 4:.1f}" font-size="12">{e(name)}</text>')
        for j, v in enumerate(latencies[name]):
            jitter = ((j * 7919) % 11 - 5) * 1.2
            parts.append(f'<circle cx="{x(v):.1f}" cy="{y + jitter:.1f}" r="3" fill="{color}" fill-opacity="0.55"/>')
        if p50.get(name):
            parts.append(f'<line x1="{x(p50[name]):.1f}" y1="{y - 12:.1f}" x2="{x(p50[name]):.1f}" y2="{y + 12:.1f}" '
                         f'stroke="#1d2330" stroke-width="2"/>')
        if p95.get(name):
            parts.append(f'<line x1="{x(p95[name]):.1f}" y1="{y - 12:.1f}" x2="{x(p95[name]):.1f}" y2="{y + 12:.1f}" '
                         'stroke="#1d2330" stroke-width="2" stroke-dasharray="3,2"/>')
    parts.append("</svg>")
    return f'<div class="chart">{"".join(parts)}</div>'


# --------------------------------------------------------------------------- sections
def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def _header(run: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    lineage = run.get("lineage") or {}
    models = lineage.get("models") or {}
    q = result.get("questions") or {}
    status = run.get("status", "")
    out = [f"<h1>ragtune compare — bot {e(run.get('bot'))}</h1>",
           f'<div class="meta">run <code>{e(run.get("id"))}</code> · status <b>{e(status)}</b> · started '
           f"{e(_when(run.get('started_at')))} · finished {e(_when(run.get('finished_at')))} · "
           f"{e(_num(result.get('seconds'), 0))} s · ragtune {e(lineage.get('ragtune_version'))}</div>",
           f'<div class="meta">generator {e(models.get("generator"))} · embedder {e(models.get("embedder"))} · '
           f"{e(len(lineage.get('documents') or []))} documents (sha256 "
           f"{e(str(lineage.get('documents_sha256', ''))[:12])}) · questions: {e(q.get('count'))} "
           f"({e(q.get('answerable'))} answerable, {e(q.get('unanswerable'))} unanswerable; "
           f"{e(q.get('origin'))}{': ' + e(q.get('path')) if q.get('path') else ''}; "
           f"{e(q.get('overlap_with_training', 0))} also in training data)</div>"]
    if status != "complete":
        out.append(f'<div class="warn bad"><b>This run is {e(status)}, not complete.</b> The figures below cover '
                   f"only what finished before it stopped{': ' + e(run.get('error')) if run.get('error') else ''}.</div>")
    for name, reason in (result.get("skipped") or {}).items():
        out.append(f'<div class="warn">{e(name)} was not measured: {e(reason)}</div>')
    adapters = models.get("adapters") or {}
    if adapters:
        items = "; ".join(f"{e(n)}: adapter <code>{e(a.get('id'))}</code>{' (RAFT)' if a.get('raft') else ''}"
                          f"{', trained for this run' if a.get('trained_now') else ''}" for n, a in adapters.items())
        out.append(f'<div class="meta">{items}</div>')
    return "\n".join(out)


def _summary_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    cols = [("accuracy", "accuracy", _pct), ("abstention_accuracy", "abstention acc.", _pct),
            ("grounded", "grounded", _pct), ("recall@k", "recall@k", _pct),
            ("latency_ms_p50", "p50 ms", _num), ("latency_ms_p95", "p95 ms", _num)]
    costs = [("training_seconds", "training s", _num), ("adapter_mb", "adapter MB", lambda v: _num(v, 2)),
             ("index_mb", "index MB", lambda v: _num(v, 2)), ("tokens_per_answer", "tokens/answer", _num)]
    head = "".join(f"<th>{e(label)}</th>" for _, label, _ in cols + costs)
    rows = []
    for i, (name, m) in enumerate(metrics.items()):
        cells = "".join(f'<td class="num">{e(fmt(m.get(key)))}</td>' for key, _, fmt in cols)
        cells += "".join(f'<td class="num">{e(fmt((m.get("cost") or {}).get(key)))}</td>' for key, _, fmt in costs)
        rows.append(f'<tr><td><span class="sw" style="background:{_color(name, i)}"></span>{e(name)}</td>{cells}</tr>')
    return f"<table><tr><th>strategy</th>{head}</tr>{''.join(rows)}</table>"


def _charts(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    def col(key, sub=None):
        return {n: ((m.get(sub) or {}).get(key) if sub else m.get(key)) for n, m in metrics.items()}

    k = next((m.get("k") for m in metrics.values() if m.get("k")), None)
    charts = [bar_chart("Accuracy (answerable questions)", col("accuracy"), scale=1.0),
              bar_chart("Abstention accuracy (unanswerable)", col("abstention_accuracy"), scale=1.0),
              bar_chart("Grounded in cited chunks", col("grounded"), scale=1.0,
                        note="no citations = 0% grounded"),
              bar_chart(f"Retrieval recall@{k or 'k'}", col("recall@k"), scale=1.0, note="n/a: no retrieval"),
              bar_chart("Latency p50 (ms)", col("latency_ms_p50"), fmt=_num),
              bar_chart("Latency p95 (ms)", col("latency_ms_p95"), fmt=_num),
              bar_chart("Tokens per answer", col("tokens_per_answer", "cost"), fmt=_num),
              bar_chart("Training time (s)", col("training_seconds", "cost"), fmt=_num),
              bar_chart("Adapter size (MB)", col("adapter_mb", "cost"), fmt=lambda v: _num(v, 2)),
              bar_chart("Index size (MB)", col("index_mb", "cost"), fmt=lambda v: _num(v, 2))]
    return f'<div class="charts">{"".join(charts)}</div>'


def _freshness(fresh: Mapping[str, Any] | None, metrics: Mapping[str, Any]) -> str:
    if not fresh:
        return ("<p>Not measured. Run <code>ragtune compare --changed-docs DIR --questions-after FILE</code> to see "
                "how each strategy copes when documents change.</p>")
    names = [n for n, v in fresh.items() if isinstance(v, dict) and "accuracy_after_change" in v]
    series = ["before the change", "after the change (no retraining)"]
    retrained = any("accuracy_after_retrain" in fresh[n] for n in names)
    if retrained:
        series.append("after retraining")
    groups = {n: {"before the change": (metrics.get(n) or {}).get("accuracy"),
                  "after the change (no retraining)": fresh[n].get("accuracy_after_change"),
                  "after retraining": fresh[n].get("accuracy_after_retrain")} for n in names}
    sync = fresh.get("sync") or {}
    retrain = fresh.get("retrain_seconds")
    how = "measured on the copy" if fresh.get("retrain_measured") else "estimated from the adapter's own training"
    rows = "".join(
        f"<tr><td>{e(n)}</td><td class='num'>{e(_pct(fresh[n].get('accuracy_after_change')))}</td>"
        f"<td class='num'>{e(_pct(fresh[n].get('abstention_accuracy_after_change')))}</td>"
        f"<td class='num'>{e('never' if fresh[n].get('seconds_to_fresh') is None else _num(fresh[n]['seconds_to_fresh']))}</td>"
        f"<td>{e('stale' if fresh[n].get('adapter_stale') else ('current' if 'adapter_stale' in fresh[n] else '—'))}</td></tr>"
        for n in names)
    return (f"<p>On a copy of the bot, its documents were replaced by <code>{e(fresh.get('changed_docs'))}</code> "
            f"and synced ({e(fresh.get('sync_mode'))}: {e(sync.get('updated'))} updated, {e(sync.get('added'))} added, "
            f"{e(sync.get('removed'))} removed, {e(sync.get('unchanged'))} unchanged) in "
            f"<b>{e(_num(fresh.get('sync_seconds'), 2))} s</b>; then every strategy answered "
            f"<code>{e(fresh.get('questions_after'))}</code> without retraining. Retraining the adapter takes "
            f"<b>{e(_num(retrain))} s</b> ({e(how)}).</p>"
            f'<div class="charts">{grouped_chart("Accuracy before and after the documents changed", groups, series, scale=1.0)}</div>'
            "<table><tr><th>strategy</th><th>accuracy after change</th><th>abstention acc. after</th>"
            f"<th>seconds to be fresh</th><th>adapter</th></tr>{rows}</table>")


def _answer_cell(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "<td>—</td>"
    verdict = ('<span class="abst">abstained</span>' if r.get("abstained") else "") + (
        ' <span class="ok">✓</span>' if r.get("correct") else ' <span class="no">✗</span>')
    cites = "".join(f'<div class="cite">[{i}] {e(c.get("source"))} — {e(c.get("title"))}</div>'
                    for i, c in enumerate(r.get("citations") or [], 1))
    return (f"<td>{verdict} <span class='cite'>{e(_num(r.get('ms'), 0))} ms</span>"
            f"<div class='ans'>{e(r.get('answer'))}</div>{cites}</td>")


def _question_table(per: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    if not per:
        return "<p>No questions were answered.</p>"
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    rows = []
    for i, p in enumerate(per, 1):
        expected = ", ".join(p.get("answers") or []) or "(unanswerable: should abstain)"
        source = f"<div class='cite'>{e(p.get('source'))}</div>" if p.get("source") else ""
        cells = "".join(_answer_cell((p.get("results") or {}).get(n)) for n in names)
        rows.append(f"<tr><td class='num'>{i}</td><td>{e(p.get('question'))}</td><td>{e(expected)}{source}</td>"
                    f"{cells}</tr>")
    return (f"<table><tr><th>#</th><th>question</th><th>expected</th>{head}</tr>{''.join(rows)}</table>")


def render_report(run: Mapping[str, Any]) -> str:
    """The whole report as one HTML string (no script; a CSP forbids loading anything)."""
    result = run.get("result") or {}
    metrics = result.get("strategies") or {}
    per = result.get("per_question") or []
    names = list(metrics) or sorted({n for p in per for n in (p.get("results") or {})})
    latencies = {n: [p["results"][n]["ms"] for p in per if n in (p.get("results") or {})] for n in names}
    body = [_header(run, result),
            "<h2>Metrics per strategy</h2>", _summary_table(metrics) if metrics else "<p>No strategy finished.</p>",
            _charts(metrics) if metrics else "",
            "<h2>Latency distribution</h2>",
            latency_chart(latencies, {n: m.get("latency_ms_p50") for n, m in metrics.items()},
                          {n: m.get("latency_ms_p95") for n, m in metrics.items()}),
            "<h2>Freshness: after the documents change</h2>", _freshness(result.get("freshness"), metrics),
            "<h2>Every question, every strategy</h2>", _question_table(per, names)]
    after = result.get("per_question_after") or []
    if after:
        after_names = sorted({n for p in after for n in (p.get("results") or {})},
                             key=lambda n: (names.index(n.split(" ")[0]) if n.split(" ")[0] in names else 99, n))
        body += ["<h2>After the change: every question, every strategy</h2>", _question_table(after, after_names)]
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>ragtune compare {e(run.get('id'))}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(body) + "</main></body></html>")


def check_writable(path: str | Path) -> Path:
    """Fail before a long run when the report cannot be written there."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"--html {path} is a folder; give a file name such as report.html")
    if not p.parent.exists():
        raise InputError(f"--html {path}: folder {p.parent} does not exist")
    return p


def write_report(run: Mapping[str, Any], path: str | Path) -> Path:
    p = check_writable(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(render_report(run), encoding="utf-8")
    tmp.replace(p)
    return p
