"""The generated configuration reference, and the example site configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from interlink_htcondor import settings
from interlink_htcondor.cli import config_reference, main

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(settings.ENV_PREFIX):
            monkeypatch.delenv(key)


def all_keys() -> list[tuple[str, str]]:
    """(section, key) for every field of the settings model, walked independently."""
    out = []
    for section, field in settings.Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        out += [(section, key) for key in model.model_fields]
    return out


def test_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == config_reference.render_markdown(), (
        f"docs/configuration.md is stale; regenerate it with: {config_reference.GENERATOR}"
    )


def test_check_option_detects_staleness(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.md"
    assert main(["config-reference", "-o", str(fresh)]) == 0
    assert main(["config-reference", "--check", str(fresh)]) == 0
    stale = tmp_path / "stale.md"
    stale.write_text(fresh.read_text().replace("`server.port`", "`server.prot`"))
    assert main(["config-reference", "--check", str(stale)]) == 1
    assert main(["config-reference", "--check", str(tmp_path / "missing.md")]) == 1


def test_every_key_is_documented_with_its_env_variable() -> None:
    text = config_reference.render_markdown()
    for section, key in all_keys():
        env = f"{settings.ENV_PREFIX}{section.upper()}__{key.upper()}"
        rows = [line for line in text.splitlines() if line.startswith(f"| `{section}.{key}` |")]
        assert len(rows) == 1, f"{section}.{key} documented {len(rows)} times"
        assert f"`{env}`" in rows[0]
    assert "| `containers.image_rules[].match` | string | required |" in text


def test_documented_env_variables_really_override(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {k.path: k for s in config_reference.sections() for k in s.keys}
    overrides = {
        "schedd.collector": ("cm.example.org:9618", "cm.example.org:9618"),
        "server.port": ("4711", 4711),
        "server.socket": ("/run/x.sock", Path("/run/x.sock")),
        "containers.mode": ("container_universe", "container_universe"),
        "storage.host_path_allow": ('["/cvmfs"]', ["/cvmfs"]),
        "policy.accounting_groups": ('{"*": "group_x"}', {"*": "group_x"}),
        "containers.image_rules": ('[{"match": "a*", "target": "/b"}]', None),
    }
    for path, (raw, _) in overrides.items():
        monkeypatch.setenv(rows[path].env, raw)
    loaded = settings.load()
    for path, (_, expected) in overrides.items():
        section, key = path.split(".")
        value = getattr(getattr(loaded, section), key)
        if expected is None:
            assert value[0].match == "a*" and value[0].target == "/b"
        else:
            assert value == expected, path


def test_yaml_example_is_the_defaults(tmp_path: Path) -> None:
    example = config_reference.example_yaml()
    path = tmp_path / "example.yaml"
    path.write_text(example)
    assert settings.load(path) == settings.Settings()
    data = yaml.safe_load(example)
    assert sorted((s, k) for s, keys in data.items() for k in keys) == sorted(all_keys())
    # ... and it is in the reference, verbatim.
    assert f"```yaml\n{example}```" in config_reference.render_markdown()


def test_generation_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = config_reference.render_markdown()
    monkeypatch.setenv(f"{settings.ENV_PREFIX}SERVER__PORT", "1234")
    assert config_reference.render_markdown() == before


class _Item(BaseModel):
    """One thing."""

    name: str = Field(min_length=1, description="Its name | with a pipe.")


class _Section(BaseModel):
    mode: Literal["a", "b"] = Field("a", description="Mode.")
    path: Path | None = Field(None, description="A path.")
    count: int = Field(3, ge=1, le=9, description="How many.")
    file_mode: int = Field(0o640, description="Bits.")
    items: list[_Item] = Field(default_factory=list, description="Things.")
    names: dict[str, int] = Field(default_factory=dict, description="Map.")


class _Model(BaseModel):
    sec: _Section = Field(default_factory=_Section)


def test_type_and_default_rendering() -> None:
    text = config_reference.render_markdown(_Model)
    assert '| `sec.mode` | one of `"a"`, `"b"` | `"a"` |' in text
    assert "| `sec.path` | path or null | `null` |" in text
    assert "| `sec.count` | integer (>= 1, <= 9) | `3` |" in text
    assert "| `sec.file_mode` | integer | `416` (octal `0o640`) |" in text
    assert "| `sec.items` | list of _Item (see below) | `[]` |" in text
    assert "| `sec.names` | map of string to integer | `{}` |" in text
    assert "## `sec.items[]` entries" in text and "One thing." in text
    assert "Its name \\| with a pipe." in text
    assert "| `sec.items[].name` | string (length >= 1) | required |" in text
    assert "`INTERLINK_HTCONDOR_SEC__COUNT`" in text


def test_wlcg_example_validates_and_covers_the_site_pattern() -> None:
    cfg = settings.load(ROOT / "docs" / "examples" / "site-wlcg.yaml")
    assert cfg.storage.mode == "spool"
    assert cfg.schedd.collector and cfg.schedd.schedd_name
    assert cfg.schedd.auth_methods == "SCITOKENS" and cfg.schedd.scitoken_file is not None
    assert cfg.containers.mode == "apptainer"
    targets = [r.target for r in cfg.containers.image_rules]
    assert targets and all(t.startswith("/cvmfs/unpacked.cern.ch/") for t in targets)
    assert cfg.containers.image_rules[-1].match == "*"
    assert len(cfg.policy.accounting_groups) >= 2 and "*" in cfg.policy.accounting_groups
    assert cfg.server.socket is not None
