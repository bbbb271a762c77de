"""The one exception tree. The CLI prints `str(err)` on one line and exits with `err.exit_code`;
the server maps `err.http_status` to a JSON error.

    RagtuneError
    ├── ConfigError          bad setting, flag or config file value (lists valid values)
    ├── NotFoundError        unknown bot, source, document, run (a foreign id reads the same)
    ├── InputError           a question, file or dataset the user gave us is unusable
    ├── SourceError          a source could not be read (one file: reported in `failed`, not raised)
    ├── ModelError           a model file is missing, corrupt, or fails its sha256
    ├── EndpointError        a remote OpenAI-compatible endpoint is unreachable or answered an error
    └── MissingExtraError    an optional dependency is absent (names the extra to install)
"""

from __future__ import annotations


class RagtuneError(Exception):
    exit_code = 1
    http_status = 500

    def __str__(self) -> str:  # always one line: users see this text as-is
        return " ".join(super().__str__().split())


class ConfigError(RagtuneError):
    exit_code = 2
    http_status = 400


class NotFoundError(RagtuneError):
    exit_code = 3
    http_status = 404


class InputError(RagtuneError):
    exit_code = 2
    http_status = 400


class SourceError(RagtuneError):
    exit_code = 4
    http_status = 422


class ModelError(RagtuneError):
    exit_code = 5
    http_status = 503


class EndpointError(RagtuneError):
    exit_code = 6
    http_status = 502


class MissingExtraError(RagtuneError):
    exit_code = 7
    http_status = 501

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; install it with: pip install 'ragtune[{extra}]' (or run `make install`)"
        )


def require(module: str, extra: str):
    """Import an optional dependency or raise MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc
