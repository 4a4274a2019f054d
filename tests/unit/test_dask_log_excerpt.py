"""What a failed worker's report quotes from its log (pure)."""

from __future__ import annotations

from interlink_htcondor.dask.plugincluster import log_excerpt

# A worker without a nanny that failed in its constructor: the cause is far above the end.
CHAINED = (
    """\
2026-11-30 08:16:35,991 - distributed.worker - INFO - starting
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/distributed/core.py", line 528, in start
    await wait_for(self.start_unsafe(), timeout=timeout)
TypeError: Worker.__init__() got an unexpected keyword argument 'no_such_option'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
"""
    + "".join(f'  File "/x/frame{i}.py", line {i}, in f\n    f()\n' for i in range(12))
    + ("RuntimeError: Worker failed to start.\n")
)


def test_the_cause_of_a_chain_above_the_tail_is_quoted_first() -> None:
    out = log_excerpt(CHAINED, 15).split("\n      ")
    assert (
        out[0] == "TypeError: Worker.__init__() got an unexpected keyword argument 'no_such_option'"
    )
    assert out[1] == "..."
    assert out[-1] == "RuntimeError: Worker failed to start."
    assert len(out) == 2 + 15


def test_a_short_log_is_quoted_whole_without_repeats() -> None:
    out = log_excerpt(CHAINED, 100).split("\n      ")
    assert out == CHAINED.strip().splitlines()


def test_a_log_without_a_chain_is_its_tail() -> None:
    text = "\n".join(f"line {i}" for i in range(40))
    assert log_excerpt(text, 3).split("\n      ") == ["line 37", "line 38", "line 39"]
