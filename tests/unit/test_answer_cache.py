"""The /status entry cache: kept while the job ad is the same object and the pod the same."""

from __future__ import annotations

from interlink_htcondor.core.models import PodRef
from interlink_htcondor.core.pod_status import HELD, IDLE, RUNNING, StatusResult
from interlink_htcondor.service.answer_cache import AnswerCache, BodyCache, cacheable, pod_key


def ref(image: str = "busybox:1.36", name: str = "p") -> PodRef:
    return PodRef(uid="u", name=name, namespace="n", containers=("c",), images={"c": image})


def test_an_entry_serves_while_ad_pod_and_diagnosis_are_the_same() -> None:
    cache = AnswerCache(limit=10)
    ad = {"JobStatus": IDLE}
    cache.put("u", ad, pod_key(ref()), None, b"{1}")
    assert cache.get("u", ad, pod_key(ref()), None) == b"{1}"
    assert cache.get("u", dict(ad), pod_key(ref()), None) is None  # an equal but new ad
    assert cache.get("u", ad, pod_key(ref(image="other")), None) is None
    assert cache.get("u", ad, pod_key(ref(name="q")), None) is None
    assert cache.get("u", ad, pod_key(ref()), "cannot match") is None
    assert cache.get("v", ad, pod_key(ref()), None) is None


def test_the_cache_is_bounded() -> None:
    cache = AnswerCache(limit=3)
    ad = {"JobStatus": IDLE}
    for uid in "abc":
        cache.put(uid, ad, (), None, uid.encode())
    cache.put("a", ad, (), None, b"A")  # a replacement does not grow it
    assert len(cache) == 3
    cache.put("d", ad, (), None, b"d")
    assert len(cache) == 1 and cache.get("d", ad, (), None) == b"d"


def test_only_answers_that_do_not_depend_on_the_clock_are_kept() -> None:
    live = StatusResult({})
    assert cacheable({"JobStatus": IDLE}, live)
    assert cacheable({"JobStatus": RUNNING}, live)
    assert not cacheable({"JobStatus": HELD}, live)  # its grace period runs out
    assert not cacheable({"JobStatus": RUNNING}, StatusResult({}, terminal=True))
    assert not cacheable({"JobStatus": IDLE}, StatusResult({}, remove_reason="x"))


def test_a_body_is_known_by_its_bytes() -> None:
    cache = BodyCache(limit=2)
    body = b'[{"metadata": {"uid": "u"}}]'
    key = BodyCache.key(body)
    assert key == BodyCache.key(bytes(body)) and key != BodyCache.key(body + b" ")
    assert cache.get(key) is None
    cache.put(key, [ref()])
    assert cache.get(key) == (ref(),)
    cache.put(BodyCache.key(b"1"), [])
    cache.put(BodyCache.key(b"2"), [])  # past the limit: starts over
    assert len(cache) == 1 and cache.get(key) is None
