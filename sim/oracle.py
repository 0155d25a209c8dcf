"""The bit-exactness oracle: LiteRT's reference kernels (``BUILTIN_REF``).

Not the default resolver: its optimized kernels and the XNNPACK delegate round differently
from the reference kernels the accelerator reproduces. Results are those of the pinned
``ai-edge-litert`` (see pyproject).
"""

from __future__ import annotations

import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

__all__ = ["litert_run", "litert_run_all"]


def _interpreter(model: bytes | str | os.PathLike, preserve_all: bool) -> Interpreter:
    source = (dict(model_content=bytes(model)) if isinstance(model, (bytes, bytearray))
              else dict(model_path=os.fspath(model)))
    interpreter = Interpreter(**source, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=preserve_all)
    interpreter.allocate_tensors()
    return interpreter


def _invoke(interpreter: Interpreter, x: np.ndarray) -> None:
    detail = interpreter.get_input_details()[0]
    x = np.asarray(x)
    if tuple(x.shape) != tuple(detail["shape"]) or x.dtype != detail["dtype"]:
        raise ValueError(f"input must be {np.dtype(detail['dtype'])}{list(detail['shape'])}, "
                         f"not {x.dtype}{list(x.shape)}")
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()


def litert_run(model: bytes | str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Run a single-input model (bytes or path) on ``x`` with LiteRT ``BUILTIN_REF``; return a
    copy of the first output."""
    interpreter = _interpreter(model, preserve_all=False)
    _invoke(interpreter, x)
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def litert_run_all(model: bytes | str | os.PathLike, x: np.ndarray) -> dict[int, np.ndarray]:
    """Like ``litert_run`` but return every tensor after the invoke (intermediates preserved),
    keyed by tensor index. Tensors without data (absent optional inputs) are left out."""
    interpreter = _interpreter(model, preserve_all=True)
    _invoke(interpreter, x)
    out = {}
    for detail in interpreter.get_tensor_details():
        try:
            out[detail["index"]] = interpreter.get_tensor(detail["index"]).copy()
        except ValueError:
            continue
    return out
