"""The README's main command, `interlink-htcondor demo`, end to end on the real pool."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from interlink_htcondor.devpool import PoolInfo


def test_demo_fits_the_z_peak_on_htcondor_workers_and_writes_the_plot(
    pool: PoolInfo, tmp_path: Path
) -> None:
    out = tmp_path / "zpeak.png"
    argv = [sys.executable, "-m", "interlink_htcondor", "demo", "--workers", "2"]
    argv += ["--files", "3", "--events", "20000", "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    # progress while workers arrive, ending with both connected
    assert re.search(r"workers: 0/2 running, 2 (submitting|pending)", text)
    assert "workers: 2/2 running" in text
    # the work ran on HTCondor jobs, in the container
    assert len(re.findall(r"partitions, HTCondor job \d+\.\d+, Python 3\.11", text)) == 2
    assert "60,000 events" in text
    m = re.search(r"Z peak: m = ([0-9.]+) ± ([0-9.]+) GeV", text)
    assert m, text
    assert abs(float(m.group(1)) - 91.2) < 0.5
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert "workers removed, plugin stopped" in text
