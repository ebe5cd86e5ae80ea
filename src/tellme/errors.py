"""Errors tellme raises on purpose (the bottom of the import graph). All are ValueErrors, so code
that caught ValueError before still does; the CLI prints any of them as `tellme: error: ...`."""


class TellmeError(ValueError):
    """Base of every expected failure; the message names the file, tensor, key or argument."""


class FormatError(TellmeError):
    """A model file is missing, truncated or inconsistent."""


class ConfigError(FormatError):
    """A model configuration (config.json, GGUF metadata) holds values tellme cannot run."""


class UsageError(TellmeError):
    """An argument of the API or the command line is of the wrong type or out of range."""
