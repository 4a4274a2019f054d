"""Container environment and ``$(VAR)`` expansion, as the kubelet does them.

Order: ``envFrom`` sources first (keys sorted, with their prefix), then ``env`` in order;
a later entry replaces an earlier one of the same name. ``env`` values (not ``valueFrom``
or ``envFrom`` ones) may reference earlier entries as ``$(NAME)``; ``$$`` is a literal
``$``; a reference to an undefined name stays as written. ``command`` and ``args`` expand
against the container's final environment. Values are data: they travel to the job
wrapper in JSON and reach the container byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping

from interlink_htcondor.core.models import Container, EnvVar
from interlink_htcondor.core.translate.context import PodContext, secret_items
from interlink_htcondor.core.translate.downward import field_value, resource_value
from interlink_htcondor.core.translate.errors import TranslationError


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (k8s.io/kubernetes third_party expansion rules)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 == n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":  # escaped: "$$" -> "$"
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end == -1:  # unterminated: kept as written
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : end]
                out.append(env.get(name, f"$({name})"))
                i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def check_name(name: str, where: str) -> None:
    if not name or "=" in name or any(not (0x20 <= ord(ch) < 0x7F) for ch in name):
        raise TranslationError(
            f"{where}: environment variable name {name!r} must be printable ASCII without '='"
        )


def check_value(value: str, where: str) -> None:
    if "\x00" in value:
        raise TranslationError(f"{where}: contains a NUL character, which no process can receive")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TranslationError(f"{where}: is not valid Unicode text") from e


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TranslationError(f"{where}: value is not UTF-8 text") from e


def _value_from(ctx: PodContext, c: Container, e: EnvVar, where: str) -> str | None:
    """Resolve ``valueFrom``; ``None`` when an optional source or key is absent."""
    src = e.value_from
    assert src is not None
    if src.config_map_key_ref is not None:
        ref = src.config_map_key_ref
        cm = ctx.configmaps.get(ref.name)
        values = None if cm is None else cm.data
        kind = "configMap"
    elif src.secret_key_ref is not None:
        ref = src.secret_key_ref
        secret = ctx.secrets.get(ref.name)
        values = None
        if secret is not None:
            items = secret_items(secret, where)
            values = {
                k: _text(v, f"{where}: secret {ref.name!r} key {k!r}")
                for k, v in items.items()
                if k == ref.key
            }
        kind = "secret"
    else:
        ref = None
    if ref is not None:
        if values is None:
            if ref.optional:
                return None
            if e.value is not None:  # already resolved by the virtual kubelet
                return e.value
            raise TranslationError(f"{where}: {kind} {ref.name!r} is not in the request")
        if ref.key in values:
            return values[ref.key]
        if ref.optional:
            return None
        raise TranslationError(f"{where}: {kind} {ref.name!r} has no key {ref.key!r}")
    if src.field_ref is not None:
        return field_value(ctx, src.field_ref, where, volume=False)
    if src.resource_field_ref is not None:
        return resource_value(ctx, src.resource_field_ref, c.name, where)
    raise TranslationError(f"{where}: valueFrom names no supported source")


def container_env(ctx: PodContext, c: Container, kind: str) -> list[tuple[str, str]]:
    """The container's environment, ordered, every value resolved and expanded."""
    env: dict[str, str] = {}
    for i, src in enumerate(c.env_from):
        where = f"{kind} {c.name!r}: envFrom[{i}]"
        ref = src.config_map_ref or src.secret_ref
        if ref is None:
            raise TranslationError(f"{where}: needs configMapRef or secretRef")
        is_cm = src.config_map_ref is not None
        kind_name = "configMap" if is_cm else "secret"
        if is_cm:
            cm = ctx.configmaps.get(ref.name)
            values = None if cm is None else dict(cm.data)
        else:
            secret = ctx.secrets.get(ref.name)
            values = (
                None
                if secret is None
                else {
                    k: _text(v, f"{where}: secret {ref.name!r} key {k!r}")
                    for k, v in secret_items(secret, where).items()
                }
            )
        if values is None:
            if ref.optional:
                continue
            raise TranslationError(f"{where}: {kind_name} {ref.name!r} is not in the request")
        for key in sorted(values):
            name = src.prefix + key
            check_name(name, where)
            check_value(values[key], f"{where}: {kind_name} {ref.name!r} key {key!r}")
            env[name] = values[key]
    for e in c.env:
        where = f"{kind} {c.name!r}: env {e.name!r}"
        check_name(e.name, where)
        if e.value_from is not None:
            resolved = _value_from(ctx, c, e, where)
            if resolved is None:
                continue
            value = resolved
        else:
            value = expand(e.value or "", env)
        check_value(value, where)
        env.pop(e.name, None)  # a redefinition moves to its own place in the order
        env[e.name] = value
    return list(env.items())


def expand_argv(argv: list[str], env: Mapping[str, str], where: str) -> list[str]:
    out = [expand(a, env) for a in argv]
    for i, a in enumerate(out):
        check_value(a, f"{where}[{i}]")
    return out
