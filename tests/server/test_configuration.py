"""Settings that cannot work are refused before anything loads, in one line that names the variable
and never repeats its value (keys and secrets are values)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedserve.server.app import create_app
from embedserve.server.cli import parse_serve, settings_from
from embedserve.server.config.errors import ConfigError
from embedserve.server.config.settings import Settings
from tests.inprocess import environment
from tests.support import ROOT


def settings(**env: str):  # type: ignore[no-untyped-def]
    with environment(env):
        return settings_from(parse_serve([]))


@pytest.mark.parametrize(
    ("env", "complaint", "secret"),
    [
        (
            {"EMBEDSERVE_API_KEYS": "k1,long-enough-2"},
            "EMBEDSERVE_API_KEYS: key 1 of 2 is shorter than 8 characters",
            "k1",
        ),
        ({"EMBEDSERVE_API_KEYS": "long-enough-1,tiny"}, "key 2 of 2 is shorter than 8 characters", "tiny"),
        (
            {"EMBEDSERVE_JWT_SECRET": "abc"},
            "EMBEDSERVE_JWT_SECRET: an HS256 secret needs at least 32 bytes; this one has 3",
            "abc",
        ),
        ({"EMBEDSERVE_DEVICE": "gpu"}, "EMBEDSERVE_DEVICE: Input should be 'auto', 'cpu', 'cuda' or 'mps'", None),
        ({"EMBEDSERVE_DTYPE": "fp8"}, "EMBEDSERVE_DTYPE: Input should be", None),
        ({"EMBEDSERVE_PORT": "70000"}, "EMBEDSERVE_PORT: Input should be less than or equal to 65535", None),
    ],
)
def test_bad_settings_are_named_without_their_values(env: dict[str, str], complaint: str, secret: str | None) -> None:
    with pytest.raises(ConfigError) as error:
        settings(**env)
    message = str(error.value)
    assert complaint in message and "input_value" not in message
    if secret is not None:
        assert secret not in message.replace("EMBEDSERVE_", "")


def test_good_keys_and_secrets_pass() -> None:
    good = settings(EMBEDSERVE_API_KEYS="key-one-0001,key-two-0002", EMBEDSERVE_JWT_SECRET="s" * 32)
    assert good.api_keys == ["key-one-0001", "key-two-0002"]


def test_a_keys_file_entry_is_named_by_its_name_and_field_not_its_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        yaml.safe_dump({"keys": [{"key": "long-enough-key", "name": "a"}, {"key": "short", "name": "team-b"}]})
    )
    with pytest.raises(ConfigError) as error:
        create_app(settings(EMBEDSERVE_API_KEYS_FILE=str(keys)))
    message = str(error.value)
    assert message == f"{keys}: entry 2 ('team-b'), key: String should have at least 8 characters"
    assert "short" not in message.replace("String should", "")


def test_serve_exits_at_once_with_one_line_and_no_secret() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedserve.server", "serve", "--port", "0"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "EMBEDSERVE_API_KEYS": "hunter2,another-long-key"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "embedserve: configuration error: EMBEDSERVE_API_KEYS: key 1 of 2 is shorter than 8 characters"
    )
    assert "hunter2" not in result.stderr + result.stdout


def test_threads_is_named_for_every_runtime_and_its_old_torch_name_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(threads=3).threads == 3
    assert Settings(torch_threads=2).threads == 2
    monkeypatch.setenv("EMBEDSERVE_TORCH_THREADS", "5")
    assert Settings().threads == 5
    monkeypatch.setenv("EMBEDSERVE_THREADS", "4")
    monkeypatch.delenv("EMBEDSERVE_TORCH_THREADS")
    assert Settings().threads == 4
    assert settings_from(parse_serve(["--torch-threads", "2"])).threads == 2
    assert settings_from(parse_serve(["--threads", "1"])).threads == 1
