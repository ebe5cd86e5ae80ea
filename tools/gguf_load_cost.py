"""Write a 2B-4T-shaped I2_S GGUF (random ternary weights), then time tellme.load on it.

    python tools/gguf_load_cost.py model.gguf write && python tools/gguf_load_cost.py model.gguf load
"""
import resource
import sys
import time

import numpy as np
from tellme.bench.e2e import SHAPES
from tellme.config import ModelConfig
from tellme.formats.gguf_export import write_gguf

path = sys.argv[1]
if sys.argv[2] == "write":
    c = ModelConfig(**SHAPES["2B-4T"], head_dim=128, context=4096, eps=1e-5, sub_norms=True, rope_theta=500000.0)
    rng = np.random.default_rng(0)

    class Synthetic:
        config = c
        def linear(self, i, name):
            return rng.integers(-1, 2, size=c.linear_shape(name), dtype=np.int8), 0.02
        def norm(self, i, name):
            return np.ones(c.norm_dim(name), np.float32)
        def embedding(self):
            return rng.standard_normal((c.vocab, c.hidden), dtype=np.float32).astype(np.float16).astype(np.float32)
        def lm_head(self):
            return None
        def final_norm(self):
            return np.ones(c.hidden, np.float32)
    t = time.perf_counter(); write_gguf(Synthetic(), None, path, "i2_s"); print(f"write {time.perf_counter()-t:.1f} s")
else:
    import tellme
    t = time.perf_counter(); m = tellme.load(path, progress=False); t1 = time.perf_counter() - t
    t = time.perf_counter(); m.logits([1, 2, 3]); t2 = time.perf_counter() - t
    print(f"load {t1:.1f} s, first forward {t2:.2f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6:.2f} GB")
