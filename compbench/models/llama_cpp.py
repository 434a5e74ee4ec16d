"""llama-cpp-python's bindings of llama.cpp's C API (the optional extra ``compbench[llamacpp]``), loaded once, with
llama.cpp's log lines routed nowhere (it prints every tensor as it loads; errors still reach the caller as return
codes). The ``llamacpp`` backend and ``quantize`` method ``gguf`` use them."""

from __future__ import annotations

import ctypes

_LOG_CALLBACK = None       # kept alive: llama.cpp calls it for every log line


def llama_cpp_module():
    """The ``llama_cpp`` bindings, ready to use, or None where llama-cpp-python is not installed."""
    global _LOG_CALLBACK
    try:
        import llama_cpp
    except (ImportError, OSError):      # OSError: the shared library is missing or was built for another CPU
        return None
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp
