from __future__ import annotations

import pytest

from meshai_common.config import S3Settings, env, env_bool, host_port, secret_from_env
from meshai_common.errors import ConfigError, InvalidInput
from meshai_common.progress import progress_postfix
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


def test_secret_from_env_or_its_file(monkeypatch, tmp_path):
    monkeypatch.delenv("MESHAI_T_KEY", raising=False)
    monkeypatch.delenv("MESHAI_T_KEY_FILE", raising=False)
    assert secret_from_env("MESHAI_T_KEY") is None
    monkeypatch.setenv("MESHAI_T_KEY", " s3cret ")
    assert secret_from_env("MESHAI_T_KEY") == "s3cret"
    (tmp_path / "key").write_text("from-file\n")
    monkeypatch.setenv("MESHAI_T_KEY_FILE", str(tmp_path / "key"))
    with pytest.raises(ConfigError, match="MESHAI_T_KEY or MESHAI_T_KEY_FILE, not both"):
        secret_from_env("MESHAI_T_KEY")
    monkeypatch.delenv("MESHAI_T_KEY")
    assert secret_from_env("MESHAI_T_KEY") == "from-file"
    monkeypatch.setenv("MESHAI_T_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"MESHAI_T_KEY_FILE: cannot read .*missing"):
        secret_from_env("MESHAI_T_KEY")


def test_progress_postfix_shows_what_training_reports():
    post = progress_postfix("epoch 2", 1.23456, 345.6, {"lr": 2e-4, "epoch": 1.5, "rss_mb": 2979.4,
                                                          "val_loss": 1.5, "tokens": 99})
    assert post == {"loss": "1.235", "val": "1.500", "lr": "2.00e-04", "ep": "1.50", "tok/s": "346",
                    "mem": "2979MB"}
    assert progress_postfix("merging adapter", None, None, {}) == {"msg": "merging adapter"}
