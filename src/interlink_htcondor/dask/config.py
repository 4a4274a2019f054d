"""Site-wide defaults through ``dask.config`` (section ``interlink-htcondor``).

An analysis facility sets the plugin URL, the worker image and the accounting group once
for all its users, as with dask-jobqueue: a YAML file in a Dask config directory (e.g.
``/etc/dask/interlink-htcondor.yaml``) or ``DASK_INTERLINK_HTCONDOR__...`` environment
variables. The packaged file ``interlink-htcondor.yaml`` holds the defaults and documents
every key; arguments given in code always win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

SECTION = "interlink-htcondor"
DEFAULTS_FILE = Path(__file__).with_name("interlink-htcondor.yaml")

with DEFAULTS_FILE.open() as _f:
    DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

dask.config.update_defaults(DEFAULTS)


def get(key: str) -> Any:
    """The configured value of ``interlink-htcondor.<key>`` (dashes or underscores)."""
    return dask.config.get(f"{SECTION}.{key}")


def pick(value: Any, key: str) -> Any:
    """``value`` when given (not None), else the configured ``key``."""
    return get(key) if value is None else value
