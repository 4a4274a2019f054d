"""The physicist's seat, in a real browser: Debian's chromium, driven by Playwright, logs in
to the project's JupyterHub, opens the Dask sidebar of JupyterLab, creates a cluster with
"NEW" and scales it to 2 workers (2 HTCondor jobs appear in the pool's schedd), runs
notebooks/zpeak.ipynb against it in the browser (the fit and the plot appear), and shuts
the cluster down (the jobs are gone). Screenshots of the sidebar and the plot are written
to out/screenshots/ (git-ignored); `make doc-images` runs this test and copies them into
docs/images/, the deliberate way to refresh the docs' pictures.

The machine is slow and shared: every wait polls with a generous deadline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from interlink_htcondor import devhub
from interlink_htcondor.devhub import HubInfo, HubPaths, HubPorts
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.local_plugin import free_port

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "zpeak.ipynb"
SCREENSHOTS = ROOT / "out" / "screenshots"
DOC_IMAGES = ROOT / "docs" / "images"
SIDEBAR_PNG, PLOT_PNG = "hub-dask-sidebar.png", "hub-zpeak-plot.png"  # as in the Makefile
CHROMIUM = "/usr/bin/chromium"
# A closed network and a container: no sandbox, GPU, QUIC or background traffic.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUNNING = 2


def until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f} s")
        time.sleep(1)


@pytest.fixture(scope="module")
def hub(pool: PoolInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubInfo]:
    paths = HubPaths(tmp_path_factory.mktemp("hub"))
    ports = HubPorts(public=free_port(), proxy_api=free_port(), hub=free_port(), plugin=free_port())
    info = devhub.ensure_up(paths=paths, ports=ports, examples=[NOTEBOOK], timeout=600)
    try:
        yield info
    finally:
        devhub.down(paths)
        print(f"\nhub logs: {paths.logs}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: install Debian's chromium (make browser)")
    with sync_playwright() as p:
        # launch() gives every run a fresh, temporary user-data-dir.
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def hub_jobs(schedd: Any, instance: str) -> dict[str, int]:
    """JobStatus of the hub plugin's jobs, by pod name."""
    ads = schedd.query(
        constraint=f'InterlinkPlugin == "{instance}"',
        projection=["InterlinkPodName", "JobStatus"],
    )
    return {str(ad["InterlinkPodName"]): int(ad["JobStatus"]) for ad in ads}


def log_in(page: Page, hub: HubInfo) -> None:
    page.goto(hub.url + "/hub/login")
    page.fill("#username_input", hub.user)
    page.fill("#password_input", hub.password_file.read_text().strip())
    page.click("#login_submit")
    # The hub spawns the user's JupyterLab, then redirects to it.
    page.wait_for_url(f"**/user/{hub.user}/lab**", timeout=600_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=600_000)


def open_dask_sidebar(page: Page) -> None:
    panel = page.locator("#dask-dashboard-launcher")
    if not panel.is_visible():  # the tab toggles: click only when it is closed
        page.locator('[data-id="dask-dashboard-launcher"]').click()
    panel.wait_for(state="visible")


def status_bar(page: Page) -> str:
    return " ".join(page.locator(".jp-StatusBar-Widget").all_inner_texts())


def run_finished(page: Page, hub: HubInfo) -> bool:
    """Run All is over: the last cell has its execution count, or the kernel has been idle
    for 30 s (a cell failed and Run All stopped there: the saved outputs say why)."""
    prompt = page.locator(".jp-CodeCell").last.locator(".jp-InputPrompt").inner_text()
    if re.search(r"\[\d+\]", prompt):
        return True
    (kernel,) = page.request.get(f"{hub.url}/user/{hub.user}/api/kernels").json()
    idle_since = datetime.fromisoformat(kernel["last_activity"].replace("Z", "+00:00"))
    quiet = (datetime.now(UTC) - idle_since).total_seconds()
    return bool(kernel["execution_state"] == "idle" and quiet > 30)


def saved_run(hub: HubInfo) -> Any:
    """The notebook as the server saved it, once every code cell ran (or one failed)."""
    path = hub.root / "users" / hub.user / NOTEBOOK.name
    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    code = [c for c in nb.cells if c.cell_type == "code"]
    done = code[-1].get("execution_count") is not None
    return nb if done or errors(nb) else None


def errors(nb: Any) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def stream_text(nb: Any) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


def test_physicist_runs_the_zpeak_notebook_on_a_sidebar_cluster(
    hub: HubInfo, browser: Browser, schedd: Any, tmp_path: Path
) -> None:
    docs_before = tree_files(DOC_IMAGES)
    page = browser.new_page(viewport={"width": 1440, "height": 1280})
    page.set_default_timeout(120_000)
    try:
        run_the_seat(page, hub, schedd)
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"\nscreenshot of the failure: {tmp_path / 'failure.png'}")
        raise
    finally:
        page.close()
    # The screenshots went to out/: a developer's tree is left as it was.
    assert tree_files(DOC_IMAGES) == docs_before
    assert all((SCREENSHOTS / name).stat().st_size > 0 for name in (SIDEBAR_PNG, PLOT_PNG))


def tree_files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def run_the_seat(page: Page, hub: HubInfo, schedd: Any) -> None:
    log_in(page, hub)
    open_dask_sidebar(page)

    # "NEW": the site's factory makes a PluginCluster of the hub's plugin.
    page.locator(".dask-DaskClusterManager").get_by_text("NEW", exact=True).click()
    item = page.locator(".dask-ClusterListingItem")
    item.first.wait_for(timeout=300_000)
    assert item.count() == 1
    assert "PluginCluster" in item.inner_text()

    # "SCALE" to 2 workers: two pods, two HTCondor jobs, two connected workers.
    item.get_by_role("button", name="SCALE").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input.dask-ScalingInput").first.fill(str(RUNNING))
    dialog.locator("button.jp-mod-accept").click()
    jobs = until(lambda: len(hub_jobs(schedd, hub.plugin_instance)) == 2, 120, "two jobs")
    assert jobs
    until(lambda: "Number of Workers: 2" in item.inner_text(), 400, "two workers in the sidebar")
    running = hub_jobs(schedd, hub.plugin_instance)
    assert sorted(running.values()) == [RUNNING, RUNNING], running

    # The notebook (the hub copied it into the new user's home), in the browser: Run All.
    page.goto(f"{hub.url}/user/{hub.user}/lab/tree/{NOTEBOOK.name}")
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=300_000)
    until(lambda: "| Idle" in status_bar(page), 300, "the notebook's kernel")
    open_dask_sidebar(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / SIDEBAR_PNG))
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
    until(lambda: run_finished(page, hub), 900, "the notebook to run")
    page.keyboard.press("Control+s")
    nb = until(lambda: saved_run(hub), 120, "the notebook saved with its outputs")
    text = stream_text(nb)

    # It used the sidebar's cluster, its two workers, each an HTCondor job of the hub.
    assert "using the Dask sidebar's cluster" in text, text
    worker_lines = re.findall(r"(\S+)\s+HTCondor job\s+(\d+\.\d+)\s+\d+ partitions", text)
    assert sorted(name for name, _ in worker_lines) == sorted(running), text
    assert not errors(nb), errors(nb)
    assert " - INFO - " not in text  # no Dask INFO lines in the outputs
    m = re.search(r"Z peak: m = ([0-9.]+) ± ([0-9.]+) GeV", text)
    assert m and abs(float(m.group(1)) - 91.2) < 0.5, text
    assert "the sidebar's cluster keeps running" in text
    assert any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))

    # The plot, as the browser shows it (cells out of view are not rendered: scroll up).
    plot = page.locator(".jp-OutputArea-output img")
    notebook = page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").first
    until(lambda: plot.count() or notebook.evaluate("e => { e.scrollTop -= 400; }"), 120, "plot")
    plot.first.scroll_into_view_if_needed()
    until(lambda: plot.first.evaluate("i => i.complete && i.naturalWidth > 400"), 60, "image")
    plot.first.screenshot(path=str(SCREENSHOTS / PLOT_PNG))

    # "SHUTDOWN": the cluster closes, and its jobs leave the queue.
    open_dask_sidebar(page)
    item.get_by_role("button", name="SHUTDOWN").click()
    until(lambda: item.count() == 0, 120, "the cluster gone from the sidebar")
    until(lambda: not hub_jobs(schedd, hub.plugin_instance), 120, "the hub's jobs removed")
