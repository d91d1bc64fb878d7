"""An experiment's ``configuration`` and ``secrets`` read from the environment: a ``type:
env`` entry whose ``key`` is no variable name is a ConfigError naming the field, as an
unset variable is, never a TypeError or KeyError from ``os.environ``."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_resilience.chaostoolkit.configuration import load_configuration, load_secrets
from pytest_resilience.errors import ConfigError


@pytest.mark.parametrize("entry", [{"type": "env", "key": 5}, {"type": "env"}], ids=["int", "none"])
def test_a_secret_without_a_variable_name_names_its_key(entry: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_secrets({"app": {"token": entry}}, source="exp.json")
    assert caught.value.field == "$.secrets.app.token.key"
    assert "exp.json" in str(caught.value) and repr(entry.get("key")) in str(caught.value)


@pytest.mark.parametrize("entry", [{"type": "env", "key": 5}, {"type": "env"}], ids=["int", "none"])
def test_a_configuration_entry_without_a_variable_name_names_its_key(
    entry: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_configuration({"url": entry}, source="exp.json")
    assert caught.value.field == "$.configuration.url.key"


def test_a_named_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTK_TEST_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("CTK_TEST_PORT", "8080")
    secrets = load_secrets({"app": {"token": {"type": "env", "key": "CTK_TEST_TOKEN"}}})
    assert secrets == {"app": {"token": "s3cr3t-value"}}
    port = {"type": "env", "key": "CTK_TEST_PORT", "env_var_type": "int"}
    assert load_configuration({"port": port}) == {"port": 8080}
