from __future__ import annotations

import pytest

from meshai_common.config import S3Settings, env, env_bool, host_port
from meshai_common.errors import ConfigError, InvalidInput
from meshai_common.registry import check_model_name, pointer_key


def test_missing_env_names_the_variable_and_its_meaning(monkeypatch):
    monkeypatch.delenv("MESHAI_S3_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match=r"MESHAI_S3_ENDPOINT is not set: S3 endpoint as host:port"):
        S3Settings.from_env()


def test_env_defaults_and_booleans(monkeypatch):
    monkeypatch.delenv("MESHAI_X", raising=False)
    assert env("MESHAI_X", "d") == "d"
    monkeypatch.setenv("MESHAI_B", "yes")
    assert env_bool("MESHAI_B") is True
    monkeypatch.setenv("MESHAI_B", "maybe")
    with pytest.raises(ConfigError, match="not a boolean"):
        env_bool("MESHAI_B")


@pytest.mark.parametrize("bad", ["localhost", "host:", ":80", "host:99999", "host:abc"])
def test_host_port_rejects_malformed(bad):
    with pytest.raises(ConfigError, match="not host:port"):
        host_port(bad, "MESHAI_LISTEN")


def test_s3_settings_from_env(monkeypatch):
    for k, v in {"MESHAI_S3_ENDPOINT": "127.0.0.1:8333", "MESHAI_S3_ACCESS_KEY": "a",
                 "MESHAI_S3_SECRET_KEY": "s", "MESHAI_S3_BUCKET": "meshai"}.items():
        monkeypatch.setenv(k, v)
    s = S3Settings.from_env()
    assert (s.endpoint, s.bucket, s.secure) == ("127.0.0.1:8333", "meshai", False)


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", "x" * 65, "mesh ai"])
def test_model_names_cannot_escape_their_prefix(name):
    with pytest.raises(InvalidInput, match="invalid model name"):
        check_model_name(name)


def test_model_name_tag_is_ignored():
    assert check_model_name("mesh-ai:latest") == "mesh-ai"
    assert pointer_key("mesh-ai") == "models/mesh-ai/current.json"
