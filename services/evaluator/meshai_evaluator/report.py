"""A self-contained HTML report of one evaluation: no script, no external file, opens anywhere.

Per-area bars for every model scored (candidate, production, base, the unquantized candidate), the
hallucinated-command rate, latency percentiles, the gate's rules, and every failed reply with its reason.
"""

from __future__ import annotations

import html
from typing import Any

from meshai_evaluator.scoring import AREAS

COLORS = {"candidate": "#2b7bb9", "candidate_f16": "#7fb3dc", "production": "#e08a1e", "base": "#9a9a9a"}
LABELS = {"candidate": "candidate", "candidate_f16": "candidate (F16, before quantization)",
          "production": "production", "base": "base model"}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:22px}h2{font-size:17px;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{height:14px;display:inline-block;vertical-align:middle}.ok{color:#1a7f37}.bad{color:#c0362c}
.reply{font-family:ui-monospace,monospace;white-space:pre-wrap;background:#f7f7f7;padding:2px 4px}
.small{color:#666;font-size:12px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _bars(models: dict[str, dict[str, Any]]) -> str:
    rows = []
    for area in (*AREAS, "overall"):
        cells = []
        for name, res in models.items():
            value = res["overall"] if area == "overall" else res["areas"].get(area, 0.0)
            sd = res.get("spread", {}).get(area, {}).get("sd", 0.0)
            cells.append(f'<div><span class="bar" style="width:{max(value, 0.5) * 3:.0f}px;'
                         f'background:{COLORS.get(name, "#555")}"></span> {value:.1f}'
                         f'{f" <span class=small>± {sd:.1f}</span>" if sd else ""}'
                         f' <span class="small">{_e(LABELS.get(name, name))}</span></div>')
        rows.append(f"<tr><th>{_e(area)}</th><td>{''.join(cells)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _summary_table(models: dict[str, dict[str, Any]]) -> str:
    head = "<tr><th>model</th><th>file</th><th class=num>overall</th><th class=num>hallucinated-command rate</th>" \
           "<th class=num>p50 s</th><th class=num>p90 s</th><th class=num>p99 s</th><th class=num>tok/s</th>" \
           "<th>passes</th></tr>"
    rows = []
    for name, r in models.items():
        lat = r.get("latency", {})
        rows.append(
            f"<tr><td>{_e(LABELS.get(name, name))}</td><td class=small>{_e(r.get('model', ''))}</td>"
            f"<td class=num>{r['overall']:.1f}</td><td class=num>{r['hallucinated_command_rate']:.1f}%</td>"
            f"<td class=num>{lat.get('p50_s', 0):.2f}</td><td class=num>{lat.get('p90_s', 0):.2f}</td>"
            f"<td class=num>{lat.get('p99_s', 0):.2f}</td><td class=num>{lat.get('tokens_per_s', 0):.0f}</td>"
            f"<td class=small>{_e(', '.join(r.get('passes', [])))}</td></tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _failures(result: dict[str, Any], limit: int = 400) -> str:
    rows = []
    for item in result.get("items", []):
        for rep in item.get("replies", []):
            if rep["passed"]:
                continue
            ctx = item.get("context") or []
            rows.append(
                f"<tr><td class=small>{_e(item.get('area', ''))}<br>{_e(item.get('id', ''))}</td>"
                f"<td>{_e(item.get('question', ''))}"
                + (f"<div class=small>context: {_e(' | '.join(ctx))}</div>" if ctx else "")
                + f"</td><td class=small>{_e(rep['pass'])}</td><td><span class=reply>{_e(rep['reply']) or '(empty)'}"
                f"</span></td><td class=bad>{_e(rep.get('reason', ''))}</td></tr>")
    if not rows:
        return "<p class=ok>No failed reply.</p>"
    more = f"<p class=small>{len(rows) - limit} more not shown (see results.json).</p>" if len(rows) > limit else ""
    return ("<table><tr><th>item</th><th>question</th><th>pass</th><th>reply</th><th>why it failed</th></tr>"
            + "".join(rows[:limit]) + "</table>" + more)


def render(results: dict[str, Any]) -> str:
    models: dict[str, dict[str, Any]] = results["models"]
    gate = results.get("gate")
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>Mesh-AI evaluation {_e(results.get('run_id', ''))}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Mesh-AI evaluation: {_e(results.get('run_id', 'local'))}</h1>",
             f"<p>Suite <b>{_e(results['suite'].get('name'))}</b> (version {_e(results['suite'].get('version'))}, "
             f"{models['candidate']['n']} questions), asked as Mesh-Master asks: its prompt shape and options "
             f"{_e(results.get('options', ''))}.</p>"]
    if gate:
        cls = "ok" if gate["promote"] else "bad"
        rules = "".join(f"<li class={'ok' if r['passed'] else 'bad'}>{_e(r['rule'])}: {_e(r['detail'])}</li>"
                        for r in gate["rules"])
        parts.append(f"<h2>Gate</h2><p class={cls}><b>{_e(gate['reason'])}</b></p><ul>{rules}</ul>")
    parts += ["<h2>Scores</h2>", _bars(models), _summary_table(models)]
    if "candidate_f16" in models:
        q, f = models["candidate"]["overall"], models["candidate_f16"]["overall"]
        parts.append(f"<p>Quantization loss: F16 {f:.1f} -> quantized {q:.1f} ({q - f:+.1f} points).</p>")
    test = results.get("test_split")
    if test:
        parts.append(f"<h2>Test split</h2><p>{test['n']} held-out examples of this run's data, candidate: "
                     f"first command right {test['areas'].get('commands', 0):.1f}%, hallucinated-command rate "
                     f"{test['hallucinated_command_rate']:.1f}%.</p>")
    parts += ["<h2>Failed replies: candidate</h2>", _failures(models["candidate"])]
    parts.append("</body></html>")
    return "\n".join(parts)
