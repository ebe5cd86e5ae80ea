"""Reading parts of a file into fresh memory, without mapping it: the bytes go when the array
goes, and nothing of the file stays resident in the process (a memory map's pages count as the
process's memory once read, until it is unmapped)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError


def read_bytes(path: os.PathLike, offset: int, nbytes: int) -> np.ndarray:
    """uint8 [nbytes] from byte `offset` of the file."""
    out = np.empty(nbytes, dtype=np.uint8)
    view, done = memoryview(out), 0
    with open(path, "rb", buffering=0) as f:
        while done < nbytes:  # one call reads at most ~2 GB
            got = os.preadv(f.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise FormatError(f"{path}: the file ended after {offset + done} bytes (truncated?)")
            done += got
    return out
