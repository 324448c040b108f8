"""How the reports look: a text table, CSV, and a self-contained HTML page with inline SVG
charts (no script, no external CSS or fonts: it opens offline and can be archived as is)."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from typing import Any

# --- the evaluation (Art. 28) -------------------------------------------------------------

CSV_COLUMNS = [
    ("agency", ("agency",)),
    ("resources", ("quantity", "resources")), ("events", ("quantity", "events")),
    ("accepted", ("quantity", "accepted")), ("deliveries_out", ("quantity", "deliveries_out")),
    ("deliveries_in", ("quantity", "deliveries_in")),
    ("rejected", ("quality", "rejected")), ("rejection_rate", ("quality", "rejection_rate")),
    ("conflicts", ("quality", "conflicts")),
    ("update_windows", ("timeliness", "windows")), ("on_time_windows", ("timeliness", "on_time")),
    ("timeliness_rate", ("timeliness", "rate")),
    ("stale_resources", ("timeliness", "stale_resources")),
    *[(f"{k}_{f}", ("responsiveness", k, f)) for k in ("requests", "objections", "cases")
      for f in ("count", "answered", "late", "median_hours")],
    ("responsiveness_on_time_rate", ("responsiveness", "on_time_rate")),
]


def _get(row: dict[str, Any], path: Sequence[str]) -> Any:
    value: Any = row
    for key in path:
        value = value[key]
    return value


def evaluation_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["year"] + [name for name, _ in CSV_COLUMNS])
    for row in report["agencies"]:
        writer.writerow([report["year"]] + ["" if (v := _get(row, path)) is None else v
                                            for _, path in CSV_COLUMNS])
    return out.getvalue()


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def evaluation_lines(report: dict[str, Any]) -> list[str]:
    head = (f"{'agency':<20} {'res':>3} {'events':>7} {'rejected':>8} {'deliv out':>9} "
            f"{'in':>6} {'confl':>5} {'on time':>9} {'stale':>5} {'requests':>9} "
            f"{'objections':>10} {'cases':>7} {'answered in time':>16}")
    lines = [f"Evaluation {report['year']} (Art. 28), {report['from'][:10]} to "
             f"{report['to'][:16]} UTC", head, "-" * len(head)]
    for a in report["agencies"]:
        q, ql, t, r = a["quantity"], a["quality"], a["timeliness"], a["responsiveness"]

        def late(kind: str, r: dict[str, Any] = r) -> str:
            return f"{r[kind]['late']}/{r[kind]['count']} late"

        lines.append(
            f"{a['agency']:<20} {q['resources']:>3} {q['events']:>7} "
            f"{_pct(ql['rejection_rate']):>8} {q['deliveries_out']:>9} {q['deliveries_in']:>6} "
            f"{ql['conflicts']:>5} {t['on_time']:>3}/{t['windows']:<5} {t['stale_resources']:>5} "
            f"{late('requests'):>9} {late('objections'):>10} {late('cases'):>7} "
            f"{_pct(r['on_time_rate']):>16}")
    lines += [f"note: {n}" for n in report["notes"]]
    return lines


def scores(report: dict[str, Any]) -> dict[str, list[tuple[str, float | None]]]:
    """Per dimension, each agency's score 0-100 (None: nothing to judge)."""
    busiest = max((a["quantity"]["events"] for a in report["agencies"]), default=0)
    dims: dict[str, list[tuple[str, float | None]]] = {
        "Quantity — events, % of the busiest agency": [],
        "Quality — events accepted by the gate, %": [],
        "Timeliness — update periods with a change, %": [],
        "Responsiveness — requests, objections, cases answered in time, %": []}
    for a in report["agencies"]:
        name, rate = a["agency"], a["quality"]["rejection_rate"]
        values = [100 * a["quantity"]["events"] / busiest if busiest else None,
                  None if rate is None else 100 * (1 - rate),
                  None if a["timeliness"]["rate"] is None else 100 * a["timeliness"]["rate"],
                  None if a["responsiveness"]["on_time_rate"] is None
                  else 100 * a["responsiveness"]["on_time_rate"]]
        for dim, value in zip(dims, values, strict=True):
            dims[dim].append((name, value))
    return dims


def _colour(value: float, graded: bool) -> str:
    if not graded:
        return "#4a78b5"
    return "#2e8b57" if value >= 90 else "#d49a1f" if value >= 70 else "#c0392b"


def bar_chart(title: str, bars: Sequence[tuple[str, float | None]], graded: bool = True,
              maximum: float = 100.0, unit: str = "%") -> str:
    """A horizontal bar chart as inline SVG; None bars say "no data"."""
    row, left, width = 26, 190, 360
    height = 34 + row * len(bars)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" '
             f'height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="18" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, value) in enumerate(bars):
        y = 30 + i * row
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">'
                     f'{html.escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width}" height="{row - 6}" '
                     f'fill="#eee"/>')
        if value is None:
            parts.append(f'<text x="{left + 6}" y="{y + 15}" fill="#777">no data</text>')
            continue
        w = max(1.0, width * min(value, maximum) / maximum) if maximum else 1.0
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{_colour(value, graded)}"><title>{html.escape(label)}: '
                     f'{value:.1f}{unit}</title></rect>')
        parts.append(f'<text x="{left + width + 6}" y="{y + 15}">{value:,.1f}{unit}</text>'
                     if unit else f'<text x="{left + width + 6}" y="{y + 15}">'
                     f'{value:,.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}svg{display:block;margin:1.2em 0}"
          "svg text{font-size:13px}table{border-collapse:collapse;font-size:13px}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "td:first-child,th:first-child{text-align:left}.note{color:#777}")


def page(title: str, body: list[str]) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{''.join(body)}</body></html>\n")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def evaluation_html(report: dict[str, Any]) -> str:
    body = [f"<p>Each agency's sharing in {report['year']} ({report['from'][:10]} to "
            f"{report['to'][:16]} UTC), by the four measures of Art. 28. Green ≥ 90, amber "
            "≥ 70, red below.</p>"]
    for i, (dim, bars) in enumerate(scores(report).items()):
        body.append(bar_chart(dim, bars, graded=i > 0))
    lines = evaluation_csv(report).splitlines()
    rows = list(csv.reader(lines))
    body.append("<h2>Figures</h2>" + _table(rows[0][1:], [r[1:] for r in rows[1:]]))
    body += [f'<p class="note">{html.escape(n)}</p>' for n in report["notes"]]
    return page(f"govbus — evaluation {report['year']} (Art. 28)", body)


# --- the annual report (Art. 26) ----------------------------------------------------------

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def annual_lines(report: dict[str, Any]) -> list[str]:
    c, e, d, r = report["catalogue"], report["events"], report["deliveries"], report["requests"]
    k, o = report["cases"], report["objections"]
    head = report["delivery_log_head"] or {}
    lines = [
        f"Sharing in {report['year']} (Art. 26), {report['from'][:10]} to "
        f"{report['to'][:16]} UTC",
        f"catalogue:   {c['resources']} resources of {c['providers']} agencies; "
        + ", ".join(f"{n} {k_}" for k_, n in c["by_database_class"].items()) + "; "
        + ", ".join(f"{n} {k_}" for k_, n in c["by_share_class"].items()),
        f"events:      {e['accepted']} accepted, {e['rejected']} rejected "
        f"({_pct(e['rejection_rate'])})",
        f"deliveries:  {d['total']} to {d['pairs']} provider→recipient pairs ("
        + ", ".join(f"{n} {ch}" for ch, n in sorted(d["by_channel"].items())) + ")",
        f"requests:    {r['filed']} filed: {r['granted']} granted, {r['rejected']} rejected, "
        f"{r['refused']} refused, {r['pending']} pending; {r['revoked']} grants revoked; "
        f"{r['grants_in_force_at_end']} grants in force at the end",
        f"cases:       {k['opened']} opened, {k['closed']} closed, {k['open_at_end']} open at "
        "the end",
        f"objections:  {o['objections']} objections, {o['complaints']} complaints, "
        f"{o['answered']} answered",
        f"stale:       {', '.join(report['stale_at_end']) or 'none'}",
        f"delivery log head: seq {head.get('seq')} hash {head.get('row_hash')} "
        "(publish it: it anchors the tamper-evident log)",
        *(f"  shard {s}: seq {h['seq']} hash {h['row_hash']}"
          for s, h in (report.get("delivery_log_heads") or {}).items() if s),
    ]
    return lines + [f"note: {n}" for n in report["notes"]]


def annual_html(report: dict[str, Any]) -> str:
    e, d = report["events"], report["deliveries"]
    top_e = max(e["accepted_by_month"] + [1])
    top_d = max(d["by_month"] + [1])
    body = ["<pre>" + html.escape("\n".join(annual_lines(report)[1:])) + "</pre>",
            bar_chart("Events accepted per month", list(zip(MONTHS, e["accepted_by_month"],
                                                             strict=True)),
                      graded=False, maximum=top_e, unit=""),
            bar_chart("Deliveries per month", list(zip(MONTHS, d["by_month"], strict=True)),
                      graded=False, maximum=top_d, unit="")]
    return page(f"govbus — the city's sharing in {report['year']} (Art. 26)", body)
