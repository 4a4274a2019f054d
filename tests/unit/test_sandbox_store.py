"""The sandbox store: nothing written outside a pod's sandbox, nothing deleted outside the
shared directory, the lock file's markers, and reads of files the job controls."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from interlink_htcondor.core import classad_attrs, jobspec
from interlink_htcondor.core.plan import JobPlan, SandboxFile
from interlink_htcondor.service.json_logging import configure_logging
from interlink_htcondor.service.sandbox_store import (
    STATUS_FILE_LIMIT,
    SandboxStore,
    write_sandbox,
)
from interlink_htcondor.settings import Settings

UID = "3c1d8a52-7f0e-4c1b-9d6e-0a1b2c3d4e5f"


def plan(*files: SandboxFile) -> JobPlan:
    return JobPlan(pod_uid=UID, name="p", namespace="ns", submit={}, files=files)


@pytest.fixture
def store(tmp_path: Path) -> SandboxStore:
    return SandboxStore(Settings(storage={"shared_dir": str(tmp_path / "pods")}))


def test_files_are_written_with_their_modes(tmp_path: Path) -> None:
    sandbox = tmp_path / "sb"
    write_sandbox(
        plan(
            SandboxFile("pod.json", b"{}", 0o600),
            SandboxFile("volumes/cm/key", b"value", 0o444),
            SandboxFile("volumes/cm/other", b"x"),
        ),
        sandbox,
    )
    assert stat.S_IMODE(sandbox.stat().st_mode) == 0o700
    assert stat.S_IMODE((sandbox / "pod.json").stat().st_mode) == 0o600
    assert (sandbox / "volumes/cm/key").read_bytes() == b"value"
    assert stat.S_IMODE((sandbox / "volumes/cm/key").stat().st_mode) == 0o444
    assert stat.S_IMODE((sandbox / "volumes/cm/other").stat().st_mode) == 0o644


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_paths_that_leave_the_sandbox_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError, match="escapes the sandbox"):
        write_sandbox(plan(SandboxFile(path, b"x")), tmp_path / "sb")
    assert not (tmp_path / "escape").exists()


def test_a_relative_sandbox_is_refused() -> None:
    with pytest.raises(ValueError, match="not an absolute path"):
        write_sandbox(plan(), Path("relative/sb"))


def test_links_planted_in_the_sandbox_are_never_followed(tmp_path: Path) -> None:
    sandbox = tmp_path / "sb"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    sandbox.mkdir()
    # A file link is replaced by a regular file; the target stays as it was.
    (sandbox / "pod.json").symlink_to(outside / "victim")
    write_sandbox(plan(SandboxFile("pod.json", b"{}")), sandbox)
    assert not (sandbox / "pod.json").is_symlink()
    assert (outside / "victim").read_text() == "untouched"
    # A directory link is refused.
    (sandbox / "volumes").symlink_to(outside)
    with pytest.raises(ValueError, match="is not a directory"):
        write_sandbox(plan(SandboxFile("volumes/x", b"x")), sandbox)
    assert not (outside / "x").exists()


def test_remove_stays_inside_the_shared_directory(store: SandboxStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir()
    asyncio.run(store.remove(UID, outside))
    asyncio.run(store.remove(UID, store.root))
    assert outside.exists() and store.root.exists()  # neither deleted
    sandbox = store.root / "ns" / "p"
    write_sandbox(plan(SandboxFile("f", b"x")), sandbox)
    asyncio.run(store.remove(UID, sandbox))
    assert not sandbox.exists() and store.root.exists()
    asyncio.run(store.remove(UID, sandbox))  # already gone: fine


def test_sandbox_of_a_pod(store: SandboxStore) -> None:
    recorded = store.sandbox_of("ns", "p", UID, {classad_attrs.SANDBOX: "/data/x"})
    assert recorded == Path("/data/x")
    computed = store.sandbox_of("ns", "p", UID)
    assert computed is not None and computed.is_relative_to(store.root)
    assert store.sandbox_of("ns", "../../etc", UID) is None  # never a valid pod


def test_status_file_reads_are_bounded_and_never_follow_links(
    store: SandboxStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = tmp_path / "sb"
    sandbox.mkdir()

    def read() -> bytes:
        return asyncio.run(store.read_status_file(sandbox))

    assert read() == b""  # not written yet
    (sandbox / jobspec.STATUS_FILE).write_text(json.dumps({"containers": []}))
    assert read() == b'{"containers": []}'
    (sandbox / jobspec.STATUS_FILE).write_bytes(b" " * (STATUS_FILE_LIMIT + 1))
    with caplog.at_level(logging.WARNING):
        assert read() == b""
    assert "oversized" in caplog.text
    (sandbox / jobspec.STATUS_FILE).unlink()
    secret = tmp_path / "secret"
    secret.write_text("not for the plugin to report")
    (sandbox / jobspec.STATUS_FILE).symlink_to(secret)
    assert read() == b""


def test_the_lock_file_records_the_pods_job(store: SandboxStore) -> None:
    async def scenario() -> None:
        claim = await store.claim(UID)
        assert (claim.job_id, claim.cut_short) == (None, False)
        await claim.mark_submitting(store, plan(SandboxFile("f", b"x")), store.root / "sb")
        claim.release()
        again = await store.claim(UID)
        assert (again.job_id, again.cut_short) == (None, True)  # as a crash leaves it
        await again.record("12.0")
        again.release()
        again.release()  # twice is harmless
        last = await store.claim(UID)
        assert (last.job_id, last.cut_short) == ("12.0", False)
        last.release()

    asyncio.run(scenario())
    lock = store.lock_dir / UID
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.lock_dir.stat().st_mode) == 0o700
    asyncio.run(store.remove(UID, None))
    assert not lock.exists()


def test_claims_of_one_pod_take_turns(store: SandboxStore) -> None:
    async def scenario() -> list[str]:
        order: list[str] = []

        async def one(name: str) -> None:
            claim = await store.claim(UID)
            order.append(f"{name} in")
            await asyncio.sleep(0)  # let the other try meanwhile
            order.append(f"{name} out")
            claim.release()

        await asyncio.gather(one("a"), one("b"))
        return order

    assert asyncio.run(scenario()) == ["a in", "a out", "b in", "b out"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = False


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning")
    logging.getLogger("interlink_htcondor.test").info("not shown")
    logging.getLogger("interlink_htcondor.test").warning("shown", extra={"pod": "ns/p"})
    assert logging.getLogger("uvicorn.access").disabled
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert (record["level"], record["msg"], record["pod"], record["session"]) == (
        "warning",
        "shown",
        "ns/p",
        "-",
    )
