"""The native forward pass against the NumPy reference (tellme.reference), without torch:
these run under the sanitizer build too. Tolerance as in test_against_transformers.py: float order differs
(online vs plain softmax), which can flip an int8 rounding at some positions."""

import numpy as np
import pytest

from tellme import reference
from tellme.config import ModelConfig
from tellme.kernels import TernaryWeights
from tellme.model import Model
from tellme.packed import PackedModel

pytestmark = pytest.mark.kernels


def random_model(act="relu2", kv_heads=2, head="int8", kernel="auto", sub_norms=True, tied=True, seed=0):
    c = ModelConfig(architecture="bitnet-2b4t", hidden=96, intermediate=136, layers=2, heads=4, kv_heads=kv_heads,
                    head_dim=24, vocab=101, context=160, eps=1e-5, activation=act, sub_norms=sub_norms,
                    tied_embeddings=tied, rope_theta=10000.0)
    rng = np.random.default_rng(seed)
    shapes = {"q": (96, 96), "k": (24 * kv_heads, 96), "v": (24 * kv_heads, 96), "o": (96, 96),
              "gate": (136, 96), "up": (136, 96), "down": (96, 136)}
    m = PackedModel(c)
    for i in range(c.layers):
        for n, s in shapes.items():
            k = kernel if kernel != "auto" else ("tlmm" if n in "qkv" else "i2")
            m.set_linear(i, n, TernaryWeights.pack(rng.integers(-1, 2, s, dtype=np.int8), rng.uniform(0.02, 0.1), k))
        for n in c.norm_names():
            dim = {"ffn_sub_norm": 136}.get(n, 96)
            m.set_norm(i, n, (1 + 0.2 * rng.standard_normal(dim)).astype(np.float32))
    m.set_rows("embedding", rng.standard_normal((101, 96)).astype(np.float32), head)
    if not tied:
        m.set_rows("lm_head", rng.standard_normal((101, 96)).astype(np.float32), head)
    m.set_final_norm(np.ones(96, np.float32))
    return Model(m, None)


@pytest.mark.parametrize("kw", [
    dict(), dict(act="silu", kv_heads=4), dict(head="fp32", tied=False), dict(sub_norms=False, kernel="tlmm"),
    dict(kernel="i2", act="silu"),
], ids=["gqa-relu2-int8", "mha-silu", "fp32-untied", "llama-tlmm", "i2-silu"])
def test_forward_matches_numpy_reference(kw, isa):
    model = random_model(**kw)
    ids = np.random.default_rng(1).integers(0, 101, 150)   # crosses attention chunks and query tiles
    ours = model.logits(ids)
    ref = reference.forward(model.packed, ids)
    per_position = np.abs(ours - ref).max(axis=1)
    assert np.median(per_position) < 1e-3
    assert per_position.max() < 0.25 * ref.std()


def test_decode_steps_equal_prefill(isa):
    model = random_model()
    ids = list(np.random.default_rng(2).integers(0, 101, 80))
    full = model.logits(ids)
    cache = model.sequences.acquire().cache
    steps = [model.engine.forward(cache, np.array([t], np.int32), i, False)[0] for i, t in enumerate(ids)]
    np.testing.assert_array_equal(np.array(steps), full)
