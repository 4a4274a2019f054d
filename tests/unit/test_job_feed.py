"""The snapshot process's side of the pipe: one answer per request, in chunks, errors
reported in the answer. (The whole process against the real pool is in
tests/integration/test_gateway.py.)"""

from __future__ import annotations

import io
import json
from collections.abc import Collection
from typing import Any

import pytest

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.job_changes import JobChanges, JobView
from interlink_htcondor.service import gateway, job_feed


class ScriptedQueries:
    """Stands for ``gateway.ChangeQueries``: answers from ``script``, records requests."""

    script: list[Any] = []
    seen: list[tuple[list[str], list[str], bool]] = []
    init: dict[str, Any] = {}

    def __init__(self, **init: Any) -> None:
        ScriptedQueries.init = init
        self.view = JobView()

    def run(
        self, uids: Collection[str], jids: Collection[str], *, full: bool = False
    ) -> tuple[JobChanges, str]:
        ScriptedQueries.seen.append((list(uids), list(jids), full))
        step = ScriptedQueries.script.pop(0)
        if isinstance(step, Exception):
            raise step
        ads, is_full = step
        return self.view.apply(ads, full=is_full), "query" if is_full else "query_changes"


def ad(uid: str, cluster: int, status: int = 1) -> dict[str, Any]:
    return {classad_attrs.POD_UID: uid, "ClusterId": cluster, "ProcId": 0, "JobStatus": status}


def test_answers_come_in_chunks_then_an_end_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "ChangeQueries", ScriptedQueries)
    monkeypatch.setattr(job_feed, "CHUNK_ADS", 2)
    many = [ad(f"u{i}", i) for i in range(5)]
    ScriptedQueries.script = [
        (many, True),
        ([ad("u0", 0, status=2)], False),
        RuntimeError("schedd gone"),
        ([], True),
    ]
    ScriptedQueries.seen = []
    requests = io.StringIO(
        json.dumps({"schedd": {}, "instance": "p", "full_refresh_seconds": 30}) + "\n"
        + json.dumps({"uids": [], "jids": []}) + "\n"
        + json.dumps({"uids": ["u1"], "jids": ["3.0"], "full": False}) + "\n"
        + json.dumps({}) + "\n"
        + json.dumps({"full": True}) + "\n"
    )  # fmt: skip
    out = io.BytesIO()
    job_feed.serve(requests, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert ScriptedQueries.init == {"schedd": {}, "instance": "p", "full_refresh_seconds": 30}
    # The first answer: three chunks of at most two ads, then its end.
    chunks = lines[:3]
    assert [len(c["changed"]) for c in chunks] == [2, 2, 1]
    end = lines[3]
    assert end["end"] and end["full"] and end["reset"] and end["operation"] == "query"
    # The second, a change query: only what changed (quiet jobs are not in its answer).
    assert lines[4] == {"changed": {"u0": ad("u0", 0, status=2)}}
    assert lines[5]["end"] and lines[5]["operation"] == "query_changes" and not lines[5]["reset"]
    assert lines[6] == {"end": True, "error": "schedd gone"}
    # The fourth, a full listing without them: they left.
    assert lines[7] == {"removed": ["u0", "u1", "u2", "u3", "u4"]}
    assert lines[8]["end"] and lines[8]["full"]
    assert ScriptedQueries.seen == [([], [], False), (["u1"], ["3.0"], False),
                                    ([], [], False), ([], [], True)]  # fmt: skip
