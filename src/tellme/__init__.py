"""tellme: ternary (BitNet b1.58) LLM inference on CPUs with table-lookup matmul."""

from .model.model import Model, default_model_path, load
from .runtime import cpu_info, get_isa, get_num_threads, set_isa, set_num_threads

__version__ = "0.1.0"
__all__ = ["Model", "default_model_path", "load", "cpu_info", "get_isa", "get_num_threads", "set_isa", "set_num_threads", "__version__"]
