"""Every loader against mutated files, each load in a child process with a time and memory limit:
no crash, no hang, no exception outside tellme's hierarchy (tellme.errors), and no silent
acceptance of a mutation that changes what the model computes (offsets, dtypes, codes, scales).

Seeded and bounded (about a minute). The sources are the shipped model (a Hugging Face
directory), its converted file, and a small GGUF written here with the shipped tokenizer."""

import json
import random
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tellme
from tests.helpers import write_small_gguf

CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np
import tellme
from tellme.errors import TellmeError
try:
    m = tellme.load(sys.argv[1], progress=False)
    logits = m.logits([0, 1, 2])
    if m.tokenizer is not None:
        m.generate("ROMEO:", max_tokens=3, temperature=0)
    print(json.dumps({"outcome": "ok" if np.isfinite(logits).all() else "nan"}))
except TellmeError as e:
    print(json.dumps({"outcome": "refused", "message": str(e)[:300]}))
except BaseException as e:
    print(json.dumps({"outcome": "foreign", "message": f"{type(e).__name__}: {e}"[:300]}))
"""
TIMEOUT_S = 60


def load_in_child(path: Path) -> dict:
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang"}
    if out.returncode != 0 or not out.stdout.strip():
        return {"outcome": "crash", "message": f"exit {out.returncode}: {out.stderr[-400:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cases(cases: dict[str, tuple[Path, bool]]) -> dict[str, dict]:
    """cases: name -> (path, must_refuse). Returns name -> outcome; prints the counts."""
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(cases, pool.map(load_in_child, [p for p, _ in cases.values()])))
    counts = {}
    for r in results.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(f"{len(cases)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    bad = {name: r for name, r in results.items()
           if r["outcome"] in ("crash", "hang", "foreign", "nan") or (cases[name][1] and r["outcome"] != "refused")}
    assert not bad, bad
    return results


def flip_bytes(data: bytes, rng: random.Random, lo: int, hi: int, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        b[rng.randrange(lo, hi)] = rng.randrange(256)
    return bytes(b)


def safetensors_header(data: bytes) -> tuple[dict, int]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), 8 + n


def with_header(data: bytes, header: dict) -> bytes:
    """The same data under a new header (padded with spaces to keep the data where it was)."""
    old_header, start = safetensors_header(data)
    text = json.dumps(header).encode()
    if len(text) <= start - 8:
        text = text.ljust(start - 8)
        return struct.pack("<Q", len(text)) + text + data[start:]
    return struct.pack("<Q", len(text)) + text + data[start:]


def edit_tensor(data: bytes, name: str, edit) -> bytes:
    """Applies edit(array view) to one tensor's bytes of a safetensors file."""
    header, start = safetensors_header(data)
    e = header[name]
    b = bytearray(data)
    begin, end = (start + o for o in e["data_offsets"])
    dtype = {"F32": np.float32, "U8": np.uint8, "I8": np.int8, "I32": np.int32, "BF16": np.uint16}[e["dtype"]]
    view = np.frombuffer(b, dtype=np.uint8, count=end - begin, offset=begin).view(dtype)
    edit(view)
    return bytes(b)


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from tellme.loading import read_packed
    from tellme.packed import PackedModel

    root = tmp_path_factory.mktemp("fuzz")
    packed, tokenizer = read_packed(tellme.default_model_path())
    packed.save(root / "converted.safetensors", tokenizer)
    tlmm, _ = read_packed(tellme.default_model_path(), kernel="tlmm")
    tlmm.save(root / "tlmm.safetensors", tokenizer)
    gguf = root / "small.gguf"
    write_small_gguf(gguf, tokenizer)
    assert all(r["outcome"] == "ok" for r in run_cases({
        "hf": (tellme.default_model_path(), False), "converted": (root / "converted.safetensors", False),
        "tlmm": (root / "tlmm.safetensors", False), "gguf": (gguf, False)}).values())
    return root, PackedModel


def test_hugging_face_directory(sources, tmp_path):
    rng = random.Random(11)
    src = tellme.default_model_path()
    cases = {}

    def variant(name, must_refuse, **files):
        d = tmp_path / name
        shutil.copytree(src, d)
        for file, data in files.items():
            (d / file.replace("__", ".")).write_bytes(data)
        cases[name] = (d, must_refuse)

    config = json.loads((src / "config.json").read_text())
    values = [0, -1, None, "x", 1.5, 1e30, 10**8, 2**64, [], {}, True, [1, 2], float("nan")]
    for i in range(24):
        c = dict(config)
        key = rng.choice(sorted(c))
        if rng.random() < 0.2:
            del c[key]
        else:
            c[key] = rng.choice(values)
        variant(f"config{i}-{key}", False, config__json=json.dumps(c).encode())
    for i, v in enumerate(["a", "relu", None, 3]):  # meaning-changing or invalid values of named keys
        variant(f"act{i}", True, config__json=json.dumps({**config, "hidden_act": v}).encode())
    for i, v in enumerate([0, -4, "4", 10**9, 2**64]):
        variant(f"heads{i}", True, config__json=json.dumps({**config, "num_attention_heads": v}).encode())
    variant("config-bytes", False, config__json=flip_bytes((src / "config.json").read_bytes(), rng, 0, 200, 8))

    weights = (src / "model.safetensors").read_bytes()
    header, start = safetensors_header(weights)
    for i in range(20):
        variant(f"header{i}", False, model__safetensors=flip_bytes(weights, rng, 8, start, rng.randint(1, 4)))
    names = sorted(k for k in header if k != "__metadata__")
    q = next(n for n in names if n.endswith("q_proj.weight"))
    shifted = json.loads(json.dumps(header))
    shifted[q]["data_offsets"] = [o + 8 for o in shifted[q]["data_offsets"]]
    variant("offset-shifted", True, model__safetensors=with_header(weights, shifted))
    overlap = json.loads(json.dumps(header))
    other = next(n for n in names if n != q and overlap[n]["dtype"] == overlap[q]["dtype"]
                 and overlap[n]["shape"] == overlap[q]["shape"])
    overlap[q]["data_offsets"] = overlap[other]["data_offsets"]
    variant("offset-overlap", True, model__safetensors=with_header(weights, overlap))
    emb = "model.embed_tokens.weight"
    relabel = json.loads(json.dumps(header))
    relabel[emb]["dtype"] = "I16"  # same size, not a float
    variant("dtype-int", True, model__safetensors=with_header(weights, relabel))
    scale = next(n for n in names if n.endswith("weight_scale"))
    for i, v in enumerate([0.0, float("nan"), float("inf")]):
        def set_scale(a, v=v):
            if a.dtype == np.uint16:  # bf16
                a[:] = np.array([v], np.float32).view(np.uint32)[0] >> 16
            else:
                a[:] = v
        variant(f"scale{i}", True, model__safetensors=edit_tensor(weights, scale, set_scale))
    variant("code3", True, model__safetensors=edit_tensor(weights, q, lambda a: a.__setitem__(0, 0xFF)))
    variant("embedding-nan", True, model__safetensors=edit_tensor(
        weights, emb, lambda a: a.__setitem__(5, 0x7FC0 if a.dtype == np.uint16 else np.nan)))

    tok = (src / "tokenizer.json").read_bytes()
    for i in range(6):
        variant(f"tokenizer{i}", False, tokenizer__json=flip_bytes(tok, rng, 0, len(tok), rng.randint(1, 6)))
    variant("tokenizer-truncated", False, tokenizer__json=tok[: len(tok) // 2])
    run_cases(cases)


def test_converted_file(sources, tmp_path):
    root, _ = sources
    rng = random.Random(12)
    cases = {}
    for kind in ("converted", "tlmm"):
        data = (root / f"{kind}.safetensors").read_bytes()
        header, start = safetensors_header(data)
        for i in range(12):
            cases[f"{kind}-header{i}"] = (write(tmp_path, f"{kind}-h{i}.safetensors",
                                                flip_bytes(data, rng, 8, start, rng.randint(1, 4))), False)
        for i in range(6):  # metadata: the configuration
            at = data.index(b"tellme.config")
            cases[f"{kind}-config{i}"] = (write(tmp_path, f"{kind}-c{i}.safetensors",
                                                flip_bytes(data, rng, at, at + 600, 2)), False)

        def targeted(name, edit):
            cases[f"{kind}-{name}"] = (write(tmp_path, f"{kind}-{name}.safetensors", edit(data)), True)

        for v in (0.0, -1.0, float("nan")):
            targeted(f"scale{v}", lambda d, v=v: edit_tensor(d, "layers.0.q.scale", lambda a: a.__setitem__(0, v)))
        targeted("row-scale", lambda d: edit_tensor(d, "embedding.row_scale", lambda a: a.__setitem__(3, -1)))
        targeted("norm-inf", lambda d: edit_tensor(d, "layers.1.ffn_norm", lambda a: a.__setitem__(0, np.inf)))
        relabel = json.loads(json.dumps(header))
        relabel["layers.0.attn_norm"]["dtype"] = "I32"
        targeted("dtype", lambda d: with_header(d, relabel))
        shifted = json.loads(json.dumps(header))
        first, second = sorted((n for n in header if n != "__metadata__"),
                               key=lambda n: header[n]["data_offsets"][0])[:2]
        shifted[second]["data_offsets"] = shifted[first]["data_offsets"] if (
            header[first]["dtype"] == header[second]["dtype"] and header[first]["shape"] == header[second]["shape"]
        ) else [o - 4 for o in shifted[second]["data_offsets"]]
        targeted("offset", lambda d: with_header(d, shifted))
        if kind == "converted":
            targeted("code3", lambda d: edit_tensor(d, "layers.0.up.codes", lambda a: a.__setitem__(7, 0xC0)))
        else:
            targeted("neg-count", lambda d: edit_tensor(d, "layers.0.up.neg_count", lambda a: a.__setitem__(0, a[0] + 1)))
            targeted("magnitude", lambda d: edit_tensor(d, "layers.0.up.tiles", lambda a: a.__setitem__(0, 0xEE)))
    run_cases(cases)


def test_gguf_file(sources, tmp_path):
    from gguf import GGUFReader

    root, _ = sources
    rng = random.Random(13)
    path = root / "small.gguf"
    data = path.read_bytes()
    reader = GGUFReader(path)
    data_start = min(t.data_offset for t in reader.tensors)
    cases = {}
    for i in range(30):
        cases[f"header{i}"] = (write(tmp_path, f"h{i}.gguf", flip_bytes(data, rng, 0, data_start,
                                                                      rng.randint(1, 4))), False)
    tensors = {t.name: t for t in reader.tensors}

    def entry_offset_field(name: str) -> int:
        """Byte position of the tensor's offset in the tensor table."""
        key = name.encode()
        at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
        n_dims = struct.unpack_from("<I", data, at)[0]
        return at + 4 + 8 * n_dims + 4

    def targeted(name, edit):
        b = bytearray(data)
        edit(b)
        cases[name] = (write(tmp_path, f"{name}.gguf", bytes(b)), True)

    up = "blk.0.ffn_up.weight"
    targeted("offset-onto-another", lambda b: struct.pack_into("<Q", b, entry_offset_field(up), 0))
    norm = "blk.0.attn_norm.weight"
    at_type = entry_offset_field(norm) - 4
    targeted("f32-relabelled-f16", lambda b: struct.pack_into("<I", b, at_type, 1))
    nbase = tensors[norm].data_offset
    targeted("norm-nan", lambda b: struct.pack_into("<f", b, nbase, float("nan")))
    ubase = tensors[up].data_offset
    targeted("code3", lambda b: b.__setitem__(ubase, 0xFF))  # TQ2_0 code 3: a weight of +2
    targeted("scale-nan", lambda b: struct.pack_into("<e", b, ubase + 64, float("nan")))  # block 0's fp16 d
    run_cases(cases)
