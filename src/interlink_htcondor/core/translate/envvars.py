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
from interlink_htcondor.core.translate.context import PodContext, text
from interlink_htcondor.core.translate.downward import field_value, resource_value
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.limits import ContainerBudget, check_count, too_many


def expand(
    text: str, env: Mapping[str, str], limit: int | None = None, where: str = "value"
) -> str:
    """Kubernetes ``$(VAR)`` expansion (k8s.io/kubernetes third_party expansion rules).

    Linear in the input, and bounded: a text or a result longer than ``limit`` characters
    is refused, and the expansion stops as soon as its output passes the limit, so nested
    references that double a value at each level never build the huge string first.
    """
    if limit is not None and len(text) > limit:
        raise TranslationError(
            f"{where}: {len(text)} characters, more than this site's limit of {limit} bytes "
            "(limits.max_value_bytes)"
        )
    if "$" not in text:
        return text
    out: list[str] = []
    size = 0
    i, n = 0, len(text)
    no_close = n + 1  # from this position on, the text has no ')' (saves rescanning)
    find = text.find
    while i < n:
        j = find("$", i)
        if j == -1:
            piece, i = text[i:], n
        elif j > i:
            piece, i = text[i:j], j
        elif i + 1 == n:
            piece, i = "$", n
        elif text[i + 1] == "$":  # escaped: "$$" -> "$"
            piece, i = "$", i + 2
        elif text[i + 1] == "(":
            end = -1 if i + 2 >= no_close else find(")", i + 2)
            if end == -1:  # unterminated: kept as written
                no_close = i + 2
                piece, i = "$(", i + 2
            else:  # an undefined name stays as written
                found = env.get(text[i + 2 : end])
                piece = text[i : end + 1] if found is None else found
                i = end + 1
        else:
            piece, i = text[i : i + 2], i + 2
        size += len(piece)
        if limit is not None and size > limit:
            raise TranslationError(
                f"{where}: longer than this site's limit of {limit} bytes after $(VAR) "
                "expansion (limits.max_value_bytes)"
            )
        out.append(piece)
    return "".join(out)


def check_name(name: str, where: str) -> None:
    if not name or "=" in name or any(not (0x20 <= ord(ch) < 0x7F) for ch in name):
        raise TranslationError(
            f"{where}: environment variable name {name!r} must be printable ASCII without '='"
        )


def check_value(value: str, where: str, limit: int | None = None) -> int:
    """Refuse what no process can receive; returns the value's size in UTF-8 bytes."""
    if "\x00" in value:
        raise TranslationError(f"{where}: contains a NUL character, which no process can receive")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise TranslationError(f"{where}: is not valid Unicode text") from e
    if limit is not None and size > limit:
        raise TranslationError(
            f"{where}: {size} bytes, more than this site's limit of {limit} bytes "
            "(limits.max_value_bytes)"
        )
    return size


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
            items = ctx.secret_data(secret, where)
            values = {
                k: text(items[k], f"{where}: secret {ref.name!r} key {k!r}")
                for k in (ref.key,)
                if k in items
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


def container_env(
    ctx: PodContext, c: Container, kind: str, budget: ContainerBudget | None = None
) -> list[tuple[str, str]]:
    """The container's environment, ordered, every value resolved and expanded."""
    limits = ctx.limits
    budget = budget or ContainerBudget(limits, f"{kind} {c.name!r}")
    env: dict[str, str] = {}
    sizes: dict[str, int] = {}
    entries = 0  # env entries and envFrom keys, redefinitions included: bounds the work

    def count(n: int) -> None:
        nonlocal entries
        entries += n
        if entries > limits.max_env_vars:
            raise too_many(
                f"{kind} {c.name!r}: environment variables (env entries and envFrom keys)",
                entries,
                limits.max_env_vars,
                "limits.max_env_vars",
            )

    def put(name: str, value: str, size: int, where: str) -> None:
        budget.refund(sizes.pop(name, 0))
        env.pop(name, None)  # a redefinition moves to its own place in the order
        sizes[name] = len(name.encode()) + 1 + size
        budget.charge(sizes[name], where)
        env[name] = value

    for i, src in enumerate(c.env_from):
        where = f"{kind} {c.name!r}: envFrom[{i}]"
        ref = src.config_map_ref or src.secret_ref
        if ref is None:
            raise TranslationError(f"{where}: needs configMapRef or secretRef")
        is_cm = src.config_map_ref is not None
        kind_name = "configMap" if is_cm else "secret"
        values: Mapping[str, str] | None
        if is_cm:
            cm = ctx.configmaps.get(ref.name)
            values = None if cm is None else cm.data
        else:
            secret = ctx.secrets.get(ref.name)
            values = None if secret is None else ctx.secret_text(secret, where)
        if values is None:
            if ref.optional:
                continue
            raise TranslationError(f"{where}: {kind_name} {ref.name!r} is not in the request")
        count(len(values))
        for key in sorted(values):
            name = src.prefix + key
            check_name(name, where)
            w = f"{where}: {kind_name} {ref.name!r} key {key!r}"
            put(name, values[key], check_value(values[key], w, limits.max_value_bytes), w)
    for e in c.env:
        count(1)
        where = f"{kind} {c.name!r}: env {e.name!r}"
        check_name(e.name, where)
        if e.value_from is not None:
            resolved = _value_from(ctx, c, e, where)
            if resolved is None:
                continue
            value = resolved
        else:
            value = expand(e.value or "", env, limits.max_value_bytes, where)
        put(e.name, value, check_value(value, where, limits.max_value_bytes), where)
    return list(env.items())


def expand_argv(
    argv: list[str], env: Mapping[str, str], where: str, budget: ContainerBudget
) -> list[str]:
    limits = budget.limits
    check_count(argv, limits.max_args, f"{where}: items", "limits.max_args")
    out = []
    for i, a in enumerate(argv):
        w = f"{where}[{i}]"
        value = expand(a, env, limits.max_value_bytes, w)
        budget.charge(check_value(value, w, limits.max_value_bytes) + 1, w)
        out.append(value)
    return out
