"""What the ``volumes`` pod of ``tests/pods`` prints, checked the same way whether it ran
through the plugin alone or through Kubernetes and interLink."""

from __future__ import annotations

import base64
import hashlib
import re

import yaml
from plugin_harness import PODS

CONFIGMAPS = "volumes.configmaps.yaml"


def check_volumes_show(out: str, pod_name: str) -> None:
    """The ``show`` container's output: each file's mode and bytes (configMap, secret,
    projected and downward API volumes)."""
    modes = {
        m.group(2): m.group(1)
        for m in (re.match(r"^mode (\d+) (/\S+)$", line) for line in out.splitlines())
        if m
    }
    assert modes == {
        "/etc/cfg/conf/settings.ini": "600",  # item mode wins over defaultMode
        "/etc/cfg-all/settings.ini": "444",
        "/etc/cfg-all/greeting.txt": "444",
        "/etc/cfg-all/raw.bin": "444",
        "/etc/secret/password": "400",
        "/etc/secret/blob": "400",
        "/etc/proj/greet": "440",
        "/etc/proj/pw": "440",
        "/etc/proj/podname": "440",
        "/etc/proj/labels": "440",
        "/etc/greeting.txt": "444",
    }
    assert "cfg: conf\n" in out  # items: only the listed key
    cm = yaml.safe_load((PODS / CONFIGMAPS).read_text().split("---")[0])
    assert f"--- settings.ini\n{cm['data']['settings.ini']}--- greeting\n" in out
    assert "--- greeting\nhello from a configMap\n" in out
    assert f"--- pw\ns3cr3t-p@ss\n--- podname\n{pod_name}\n" in out
    assert '--- labels\napp="volumes"\ntier="test"\n' in out
    assert f"--- blob {hashlib.md5(bytes(range(256))).hexdigest()}" in out
    raw = base64.b64decode(cm["binaryData"]["raw.bin"])
    assert f"--- raw {hashlib.md5(raw).hexdigest()}" in out
