"""Wiring by environment: every address, port and credential comes from an env var, checked at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from meshai_common.errors import ConfigError

# What each variable means, so a missing one produces an error an operator can act on.
ENV_HELP = {
    "MESHAI_S3_ENDPOINT": "S3 endpoint as host:port (MinIO, SeaweedFS or AWS), e.g. 127.0.0.1:8333",
    "MESHAI_S3_ACCESS_KEY": "S3 access key",
    "MESHAI_S3_SECRET_KEY": "S3 secret key",
    "MESHAI_S3_BUCKET": "bucket that holds every artifact, e.g. meshai",
    "MESHAI_LISTEN": "gRPC listen address host:port, e.g. 127.0.0.1:50051",
    "MESHAI_HTTP_LISTEN": "gateway HTTP listen address host:port, e.g. 127.0.0.1:11434",
    "MESHAI_DATA_ADDR": "data service gRPC address host:port",
    "MESHAI_TRAINER_ADDR": "trainer service gRPC address host:port",
    "MESHAI_QUANTIZER_ADDR": "quantizer service gRPC address host:port",
    "MESHAI_EVALUATOR_ADDR": "evaluator service gRPC address host:port",
    "MESHAI_GATEWAY_ADDR": "gateway service gRPC address host:port",
    "MESHAI_API_KEY": "the gateway's API key (16+ characters; or MESHAI_API_KEY_FILE): every route but health needs it",
    "MESHAI_GATEWAY_API_KEY": "the key the pipeline presents to the gateway's gRPC (or MESHAI_GATEWAY_API_KEY_FILE)",
    "MESHAI_TRAIN_PROCS": "trainer processes per job: auto (one per visible GPU) or a number",
}


def env(name: str, default: str | None = None) -> str:
    """The variable's value; its default when given; else a ConfigError naming the variable and its meaning."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    hint = ENV_HELP.get(name, "")
    raise ConfigError(f"environment variable {name} is not set" + (f": {hint}" if hint else ""))


def cache_dir() -> Path:
    """Where converted models (llama.cpp's converter, the base GGUF, the sentence-embedding GGUF) are kept:
    $MESHAI_CACHE_DIR, else ~/.cache/meshai. Whatever writes one and whatever reads it ask here."""
    return Path(os.environ.get("MESHAI_CACHE_DIR", "").strip() or Path.home() / ".cache" / "meshai")


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a boolean (use true or false)")


def read_secret(path: str | os.PathLike[str], source: str) -> str:
    """A secret kept in a file (a Kubernetes secret, a file only the operator can read), stripped."""
    try:
        value = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc}") from None
    if not value:
        raise ConfigError(f"{source}: {path} is empty")
    return value


def secret_from_env(name: str) -> str | None:
    """`NAME`'s value, or the contents of the file `NAME_FILE` names; None when neither is set."""
    value = os.environ.get(name, "").strip()
    path = os.environ.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    return read_secret(path, f"{name}_FILE") if path else value or None


def host_port(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={value!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True)
class S3Settings:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    secure: bool = False
    region: str | None = None

    @classmethod
    def from_env(cls) -> S3Settings:
        endpoint = env("MESHAI_S3_ENDPOINT")
        host_port(endpoint, "MESHAI_S3_ENDPOINT")
        return cls(
            endpoint=endpoint,
            access_key=env("MESHAI_S3_ACCESS_KEY"),
            secret_key=env("MESHAI_S3_SECRET_KEY"),
            bucket=env("MESHAI_S3_BUCKET"),
            secure=env_bool("MESHAI_S3_SECURE", False),
            region=os.environ.get("MESHAI_S3_REGION") or None,
        )
