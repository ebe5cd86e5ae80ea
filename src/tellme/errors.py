"""Errors every layer raises (the bottom of the import graph)."""


class FormatError(ValueError):
    """A model file is missing, truncated or inconsistent; the message names the file and tensor."""
