"""Helpers shared by the tests (fixtures are in conftest.py)."""

import numpy as np


def random_ternary(rng, out_features, in_features, zero_fraction=0.3):
    w = rng.integers(-1, 2, size=(out_features, in_features)).astype(np.int8)
    w[rng.random(w.shape) < zero_fraction] = 0
    return w


def random_int8(rng, tokens, in_features):
    """Full int8 range, -128 included: the kernels must be exact for any int8 input."""
    return rng.integers(-128, 128, size=(tokens, in_features)).astype(np.int8)


def i2s_by_loop(t: np.ndarray, scale: float) -> np.ndarray:
    """bitnet.cpp's quantize_i2_s layout, written out: 128-weight blocks of 32 bytes; weight j of a
    block in byte j % 32 at bits 6 - 2 * (j // 32); code = t + 1; then the fp32 scale in a 32-byte tail."""
    flat = t.reshape(-1)
    out = np.zeros(flat.size // 4 + 32, dtype=np.uint8)
    codes = out[: flat.size // 4].reshape(-1, 32)
    for j in range(128):  # every block at once, one weight position at a time
        codes[:, j % 32] |= ((flat.reshape(-1, 128)[:, j] + 1) << (6 - 2 * (j // 32))).astype(np.uint8)
    out[flat.size // 4: flat.size // 4 + 4] = np.frombuffer(np.float32(scale).tobytes(), np.uint8)
    return out


def write_small_gguf(path, tokenizer, vocab=None, kind="tq2_0", hidden=256, layers=1, seed=0):
    """A GGUF of random weights (1 layer of hidden 256 unless told, TQ2_0 or `kind`) with
    `tokenizer` and `vocab` embedding rows."""
    from tellme.config import ModelConfig
    from tellme.formats.gguf_export import write_gguf

    c = ModelConfig(architecture="bitnet-2b4t", hidden=hidden, intermediate=2 * hidden, layers=layers,
                    heads=hidden // 64, kv_heads=2, head_dim=64, vocab=vocab or tokenizer.vocab_size, context=128, eps=1e-5, activation="relu2",
                    sub_norms=True, tied_embeddings=True, rope_theta=10000.0)
    rng = np.random.default_rng(seed)

    class Reader:
        config = c

        def linear(self, i, name):
            return rng.integers(-1, 2, size=c.linear_shape(name), dtype=np.int8), 0.05

        def norm(self, i, name):
            return np.ones(c.norm_dim(name), np.float32)

        def embedding(self):
            return rng.standard_normal((c.vocab, c.hidden)).astype(np.float16).astype(np.float32)

        def lm_head(self):
            return None

        def final_norm(self):
            return np.ones(c.hidden, np.float32)

    write_gguf(Reader(), tokenizer, path, kind)


class SyntheticReader:
    """A format reader (formats/__init__.py) of random weights, the same on every call: linears
    ternary with one scale, the embedding fp16-exact (so F16 files hold it exactly)."""

    def __init__(self, config, seed=0):
        self.config, self.seed = config, seed

    def _rng(self, *key):
        return np.random.default_rng([self.seed, *key])

    def linear(self, i, name):
        from tellme.config import LINEAR_NAMES
        t = self._rng(i, LINEAR_NAMES.index(name)).integers(-1, 2, size=self.config.linear_shape(name), dtype=np.int8)
        return t, 0.05 + 0.001 * i

    def norm(self, i, name):
        if name.endswith("sub_norm") and not self.config.sub_norms:
            return None
        return (1 + 0.1 * self._rng(1000 + i, len(name)).standard_normal(self.config.norm_dim(name))).astype(np.float32)

    def embedding(self):
        c = self.config
        return self._rng(7).standard_normal((c.vocab, c.hidden)).astype(np.float16).astype(np.float32)

    def lm_head(self):
        return None

    def final_norm(self):
        return np.ones(self.config.hidden, np.float32)


def failures_in_threads(fn, count: int) -> list[str]:
    """Runs fn(0) ... fn(count - 1) at once, one thread each; what each raised, if anything."""
    import threading

    errors = []

    def run(i):
        try:
            fn(i)
        except Exception as e:  # every failure is counted
            errors.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
