"""``PluginCluster``'s part of distributed's cluster widget (pure HTML, no I/O).

distributed renders a cluster's ``cluster_status`` *inside* its ``<table>``, so what we
add must be table rows: one row whose single cell spans the table's two columns holds the
counts, the arrival bar and the worker-pod table. A ``<div>`` or ``<details>`` straight
inside a ``<table>`` is invalid HTML, which browsers move out of the table.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from interlink_htcondor.dask.podstate import Counts
from interlink_htcondor.dask.progress import counts_html

# (worker, HTCondor job, phase, reason)
PodRow = tuple[str, str, str, str]

TITLE = "HTCondor workers"


def pods_table(rows: Sequence[PodRow]) -> str:
    """A collapsible table of the worker pods, one row each (empty when there are none)."""
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("worker", "HTCondor job", "phase", "reason"))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return (
        f"<details><summary>Worker pods ({len(rows)})</summary>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>"
    )


def status_rows(counts: Counts, rows: Sequence[PodRow], notes: Sequence[str] = ()) -> str:
    """The ``cluster_status`` rows: counts, bar, ``notes`` (what the pod table does not
    say, e.g. an unreachable plugin) and the pod table, in one full-width cell."""
    body = counts_html(counts, notes, TITLE) + pods_table(rows)
    return f'<tr><td colspan="2" style="text-align: left;">{body}</td></tr>'
