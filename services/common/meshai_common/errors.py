"""Domain errors. Handlers raise these; one gRPC interceptor and one HTTP handler map them to status codes.

Messages are written for the operator: say what is wrong and where (file, line, field, key).
"""

from __future__ import annotations


class MeshAIError(Exception):
    """Base of every error the system means to report (anything else is a bug)."""

    code = "INTERNAL"


class InvalidInput(MeshAIError):
    """The caller sent something wrong: a malformed file, a bad config, an unknown option."""

    code = "INVALID_ARGUMENT"


class NotFound(MeshAIError):
    """A run, job, object or model that does not exist."""

    code = "NOT_FOUND"


class Unavailable(MeshAIError):
    """A dependency is not ready: the bucket is unreachable, no model is loaded yet."""

    code = "UNAVAILABLE"


class IntegrityError(MeshAIError):
    """Stored bytes do not match their recorded sha256."""

    code = "DATA_LOSS"


class Cancelled(MeshAIError):
    """A job was cancelled by request."""

    code = "CANCELLED"


class ConfigError(InvalidInput):
    """A required environment variable or config key is missing or malformed."""
