"""The landing page: every tenant's jobs with the state of their last collection."""

import html
import time
from collections.abc import Iterable

from exporter import __version__
from exporter.selfmetrics import JobStats

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cockpit-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
.ok{{color:#1a7f37}}.fail{{color:#cf222e}}.pending{{color:#9a6700}}</style></head>
<body><h1>cockpit-exporter {version}</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/readyz">/readyz</a></p>
<table><tr><th>tenant</th><th>source</th><th>query</th><th>state</th><th>last run</th>
<th>duration</th><th>series</th><th>error</th></tr>
{rows}
</table></body></html>
"""


def render_landing(stats: Iterable[JobStats]) -> str:
    """HTML listing each job's last outcome; every value is escaped."""
    now = time.time()
    rows = "\n".join(_row(s, now) for s in sorted(stats, key=lambda s: (s.tenant, s.query)))
    return _PAGE.format(version=html.escape(__version__), rows=rows)


def _row(stats: JobStats, now: float) -> str:
    if stats.runs == 0:
        state, css, ago = "pending", "pending", "never"
    else:
        state, css = ("ok", "ok") if stats.success else ("failing", "fail")
        ago = f"{now - stats.last_run:.0f}s ago"
    cells = [
        stats.tenant,
        stats.source,
        stats.query,
        state,
        ago,
        f"{stats.duration * 1000:.1f} ms",
        str(stats.series),
        stats.last_error,
    ]
    tds = "".join(
        f'<td class="{css}">{html.escape(c)}</td>' if i == 3 else f"<td>{html.escape(c)}</td>"
        for i, c in enumerate(cells)
    )
    return f"<tr>{tds}</tr>"
