"""ClassAds as plain dicts (``service.gateway.plain``): values evaluated, undefined ones
dropped, and the strings that repeat from ad to ad held once."""

from __future__ import annotations

import pickle

import classad2

from interlink_htcondor.service.gateway import INTERN_MAX_CHARS, plain, plain_all


def job_ad(proc: int) -> classad2.ClassAd:
    ad = classad2.ClassAd()
    ad["ProcId"] = proc
    ad["JobStatus"] = 1
    ad["InterlinkPodNamespace"] = "dask"
    ad["InterlinkSandbox"] = "/var/lib/pods/" + "x" * INTERN_MAX_CHARS + str(proc)
    ad["Twice"] = classad2.ExprTree("ProcId * 2")
    ad["Nothing"] = classad2.ExprTree("undefined")
    return ad


def test_values_are_evaluated_and_undefined_ones_dropped() -> None:
    out = plain(job_ad(3))
    assert out["Twice"] == 6
    assert "Nothing" not in out
    assert out["InterlinkPodNamespace"] == "dask"


def test_names_and_short_values_are_shared_between_ads() -> None:
    a, b = plain(job_ad(1)), plain(job_ad(2))
    names_a = {id(k) for k in a}
    assert all(id(k) in names_a for k in b)
    assert a["InterlinkPodNamespace"] is b["InterlinkPodNamespace"]
    # Long values are left alone (mostly unique: sandboxes, container states).
    assert a["InterlinkSandbox"] is not b["InterlinkSandbox"]
    # Shared strings cross the worker's pipe once.
    many = [plain(job_ad(i)) for i in range(200)]
    copies = [{str(k): v for k, v in plain(job_ad(i)).items()} for i in range(200)]
    for c in copies:  # the same content, each name a new string
        for k in list(c):
            c["".join(list(k))] = c.pop(k)
    assert len(pickle.dumps(many)) < 0.8 * len(pickle.dumps(copies))


_EVENTS: list[str] = []


class _Traced(classad2.ClassAd):  # type: ignore[misc]
    """A job ad that notes when it is converted and when it is freed."""

    def items(self):  # type: ignore[no-untyped-def]
        _EVENTS.append(f"convert {self['ProcId']}")
        return super().items()

    def __del__(self) -> None:
        _EVENTS.append("free")


def test_a_listing_is_converted_in_order_each_ad_freed_before_the_next() -> None:
    ads: list[classad2.ClassAd] = []
    for proc in range(4):
        ad = _Traced()
        ad.update(job_ad(proc))
        ads.append(ad)
    del ad
    _EVENTS.clear()
    out = plain_all(ads)
    assert [a["ProcId"] for a in out] == [0, 1, 2, 3] and ads == []
    # The answer of a big query is never held twice (as ClassAds and as dicts).
    expected = [e for p in range(4) for e in (f"convert {p}", "free")]
    assert expected == _EVENTS
