"""Jobs changed behind the plugin's back (an admin's condor_rm, through the bindings):
/status reports each with the admin's reason, and the job is never resubmitted. A running
job removed and an idle one held are in ``test_plugin_lifecycle.py``. A running job held
is reported by the status mapping of another change (a held running pod must not read
``Completed``); its test comes with it."""

from __future__ import annotations

import uuid
from typing import Any

import htcondor2
from plugin_harness import Plugin, load_pod, state_of, terminal


def test_an_idle_job_removed_behind_the_plugins_back(plugin: Plugin, schedd_jobs: Any) -> None:
    pod = load_pod("unschedulable.yaml", name=f"rm-idle-{uuid.uuid4().hex[:6]}")
    answer = plugin.create(pod)
    schedd_jobs.act(htcondor2.JobAction.Remove, [answer["PodJID"]], ("admin cleanup", 1))
    entry = plugin.wait_for(pod, terminal, timeout=60)
    t = state_of(entry, "big")["terminated"]
    assert t["exitCode"] != 0 and "admin cleanup" in t["message"], t
    # A create of the same pod again (a retry) gives no second job.
    assert plugin.create(pod) == answer
    assert schedd_jobs(pod["metadata"]["uid"], history=True) != []
    assert len(schedd_jobs(pod["metadata"]["uid"])) <= 1
