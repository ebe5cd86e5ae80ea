"""tellme: ternary (BitNet b1.58) LLM inference on CPUs with table-lookup matmul."""

from .loading import default_model_path, load
from .model import GenerationStats, Model
from .runtime import cpu_info, get_isa, get_num_threads, set_isa, set_num_threads

__version__ = "0.1.0"
__all__ = ["GenerationStats", "Model", "default_model_path", "load", "cpu_info", "get_isa", "get_num_threads",
           "set_isa", "set_num_threads", "__version__"]
