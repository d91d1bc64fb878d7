"""``configuration`` and ``secrets`` of an experiment, and ``${name}`` substitution.

As chaoslib's ``configuration.load_configuration``, ``secret.load_secrets`` and
``substitute``: inline values, ``{"type": "env", "key": ..., "default": ...,
"env_var_type": ...}``, secrets grouped by scope; a string that is exactly ``${name}``
takes the value with its type, any other string gets it as text, unknown names stay as
written. Loaded at run time, not at collection, so the environment of the run counts.
Secret values are registered with the report redactor: no report prints them.
"""

from __future__ import annotations

import json
import os
from collections import ChainMap
from collections.abc import Mapping
from string import Template
from typing import Any

from ..errors import ConfigError
from ..redaction import register_secret

__all__ = ["load_configuration", "load_secrets", "substitute"]


def load_configuration(declared: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
    """Plain values as they are, ``type: env`` read now; ``type: probe`` left for the runner."""
    loaded: dict[str, Any] = {}
    for key, value in declared.items():
        if isinstance(value, dict) and value.get("type") == "env":
            env_key = _variable(value, source=source, where=f"$.configuration.{key}")
            if env_key not in os.environ and "default" not in value:
                raise ConfigError(
                    f"configuration refers to the environment variable {env_key!r}, which is "
                    "not set: export it or give the entry a 'default'",
                    source=source,
                    field=f"$.configuration.{key}",
                )
            raw = os.environ.get(env_key, value.get("default"))
            loaded[key] = _convert(value.get("env_var_type"), raw, source=source, key=key)
        else:
            loaded[key] = value
    return loaded


def _convert(kind: str | None, value: Any, *, source: str, key: str) -> Any:
    if kind is None or kind in ("str", "string") or not isinstance(value, str):
        return value
    try:
        if kind in ("int", "integer"):
            return int(value)
        if kind in ("float", "number"):
            return float(value)
        if kind == "bytes":
            return value.encode("utf-8")
        if kind == "bool":
            return value.lower() not in ("false", "0", "no")
        if kind == "json":
            return json.loads(value) if value else value
    except ValueError as exc:
        raise ConfigError(
            f"cannot read {value!r} as {kind}: {exc}", source=source, field=f"$.configuration.{key}"
        ) from None
    raise ConfigError(
        f"env_var_type {kind!r} is unknown; use bool, str, int, float, bytes or json",
        source=source,
        field=f"$.configuration.{key}.env_var_type",
    )


def load_secrets(declared: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
    """Secrets by scope (``{"k8s": {"token": {"type": "env", "key": "K8S_TOKEN"}}}``)."""
    loaded: dict[str, Any] = {}
    for scope, values in declared.items():
        if not isinstance(values, dict):
            loaded[scope] = values
            continue
        if values.get("type") in ("env", "vault"):  # a whole scope from one source
            loaded[scope] = _secret(values, source=source, where=f"$.secrets.{scope}")
            continue
        loaded[scope] = {
            name: _secret(value, source=source, where=f"$.secrets.{scope}.{name}")
            for name, value in values.items()
        }
    return loaded


def _variable(entry: Mapping[str, Any], *, source: str, where: str) -> str:
    """The environment variable a ``type: env`` entry names in ``key``."""
    key = entry.get("key")
    if not isinstance(key, str) or not key:
        raise ConfigError(
            f"a 'type: env' entry names its environment variable in 'key', got {key!r}",
            source=source,
            field=f"{where}.key",
        )
    return key


def _secret(value: Any, *, source: str, where: str) -> Any:
    if isinstance(value, dict) and value.get("type") == "env":
        key = _variable(value, source=source, where=where)
        if key not in os.environ:
            raise ConfigError(
                f"secret refers to the environment variable {key!r}, which is not set",
                source=source,
                field=where,
            )
        value = os.environ[key]
    elif isinstance(value, dict) and value.get("type") == "vault":
        raise ConfigError(
            "Vault secrets are not supported here: export the secret and declare it as "
            '{"type": "env", "key": "NAME"}',
            source=source,
            field=where,
        )
    if isinstance(value, str) and value:
        register_secret(value)
    return value


def substitute(data: Any, configuration: Mapping[str, Any], secrets: Mapping[str, Any]) -> Any:
    """``${name}`` replaced from the configuration, then each secret scope, recursively."""
    scopes = [s for s in secrets.values() if isinstance(s, Mapping)]
    mapping = ChainMap(dict(configuration), *scopes)  # type: ignore[arg-type]  # read only: a Mapping does
    return _substitute(data, mapping)


def _substitute(data: Any, mapping: Mapping[str, Any]) -> Any:
    if isinstance(data, str):
        template = Template(data)
        whole = template.pattern.fullmatch(data)
        if whole is not None:
            name = whole.group("braced") or whole.group("named")
            if name in mapping:
                return mapping[name]  # the value with its own type: ${port} stays an int
        return template.safe_substitute(mapping)
    if isinstance(data, dict):
        return {key: _substitute(value, mapping) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_substitute(value, mapping) for value in data]
    return data
