"""tellme's converted model file: one safetensors file holding the packed kernel layout, the
configuration and the tokenizer, so that loading is a memory map with no repacking.

Metadata keys: `tellme.format` (FORMAT_VERSION), `tellme.config` (ModelConfig JSON),
`tellme.tokenizer` (tokenizer.json text, optional), `tellme.tokenizer_config` (JSON, optional).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..model.config import ModelConfig
from .safetensors import FormatError, SafetensorsFile

FORMAT_VERSION = "1"


def is_packed_file(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return "tellme.format" in SafetensorsFile(path).metadata
    except FormatError:
        return False


def save(path: str | os.PathLike, config: ModelConfig, tensors: dict[str, np.ndarray], tokenizer=None) -> None:
    from safetensors.numpy import save_file

    meta = {"tellme.format": FORMAT_VERSION, "tellme.config": config.to_json()}
    if tokenizer is not None:
        meta["tellme.tokenizer"] = tokenizer.json
        meta["tellme.tokenizer_config"] = json.dumps(tokenizer.config)
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")  # never leave a half-written model under the real name
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load(path: Path):
    """(config, tensors as memory-mapped views, tokenizer or None)."""
    from ..tokenizer import Tokenizer

    f = SafetensorsFile(path)
    version = f.metadata.get("tellme.format")
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}: tellme file format {version!r}, this version reads {FORMAT_VERSION!r}; "
                          "convert the checkpoint again")
    try:
        config = ModelConfig.from_json(f.metadata["tellme.config"])
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path}: corrupt tellme.config metadata ({e!r})") from e
    tokenizer = None
    if "tellme.tokenizer" in f.metadata:
        tokenizer = Tokenizer(f.metadata["tellme.tokenizer"], json.loads(f.metadata.get("tellme.tokenizer_config", "{}")),
                              str(path))
    return config, {name: f.raw(name) for name in f.names}, tokenizer
