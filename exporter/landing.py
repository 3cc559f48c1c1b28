"""The landing page: failing jobs first, each tenant's metrics, and the configuration in use."""

import html
import time
from collections.abc import Iterable, Mapping

from exporter import __version__
from exporter.selfmetrics import JobStats
from exporter.sources.base import Job

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cockpit-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
.ok{{color:#1a7f37}}.fail{{color:#cf222e}}.pending{{color:#9a6700}}</style></head>
<body><h1>cockpit-exporter {version}</h1>
<p>{links}</p>
<p>{failing}</p>
<h2>Collection</h2>
<table><tr><th>tenant</th><th>source</th><th>query</th><th>state</th><th>last run</th>
<th>duration</th><th>series</th><th>error</th></tr>
{rows}
</table>
{notes}<h2>Tenants</h2>
<p>{tenants}</p>
<h2>Configuration in use</h2>
<table><tr><th>job</th><th>every</th><th>timeout</th><th>target</th></tr>
{jobs}
</table>
<p>Documentation: <code>docs/</code> in the source tree: configuration.md, metrics.md,
runbooks.md, security.md.</p></body></html>
"""


def render_landing(
    stats: Iterable[JobStats],
    jobs: Iterable[Job],
    metrics_path: str,
    links: Mapping[str, str],
    notes: Mapping[str, str] | None = None,
) -> str:
    """HTML of the caller's jobs, failing ones first; every value is escaped."""
    now = time.time()
    ordered = sorted(stats, key=lambda s: (_state(s)[0] != "failing", s.tenant, s.query))
    failing = sum(1 for s in ordered if _state(s)[0] == "failing")
    tenants = sorted({s.tenant for s in ordered})
    page_links = {metrics_path: metrics_path, "/healthz": "/healthz", "/readyz": "/readyz"}
    page_links |= {url: name for name, url in links.items()}
    return _PAGE.format(
        version=html.escape(__version__),
        links=" &middot; ".join(_link(url, text) for url, text in page_links.items()),
        failing=f"{failing} failing" if failing else "nothing failing",
        rows="\n".join(_row(s, now) for s in ordered),
        tenants=" &middot; ".join(_link(f"{metrics_path}?tenant={t}", t) for t in tenants),
        jobs="\n".join(_job(j) for j in sorted(jobs, key=lambda j: j.id)),
        notes="".join(
            f"<h2>{html.escape(title)}</h2>\n<p>{html.escape(text)}</p>\n"
            for title, text in (notes or {}).items()
        ),
    )


def _link(url: str, text: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'


def _state(stats: JobStats) -> tuple[str, str]:
    if stats.runs == 0:
        return "pending", "pending"
    return ("ok", "ok") if stats.success else ("failing", "fail")


def _row(stats: JobStats, now: float) -> str:
    state, css = _state(stats)
    ago = "never" if stats.runs == 0 else f"{now - stats.last_run:.0f}s ago"
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


def _job(job: Job) -> str:
    cells = [job.id, f"{job.interval:g}s", f"{job.timeout:g}s", job.target]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
