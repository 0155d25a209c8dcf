"""Import a ``.tflite`` file into the host's ``Graph`` IR (``host.graph``).

Reads through the generated flatbuffer classes of the ``tflite`` package. Every operator is
imported, with its builtin options as plain values; deciding what can run is the compiler's
job. Rejected here: files that are not valid TFLite flatbuffers (``ModelFormatError``), and
models outside the IR (more than one subgraph, batch != 1: ``UnsupportedModelError``).
"""

from __future__ import annotations

import importlib
import os
import re
import struct
from collections import Counter

import numpy as np
import tflite

from .graph import Graph, Operator, Tensor, UnsupportedModelError

__all__ = ["ModelFormatError", "read_tflite", "OPTION_FIELD_NAMES"]


class ModelFormatError(ValueError):
    """The file is not a readable TFLite flatbuffer (wrong identifier, truncated, corrupt)."""


#: The IR's option names that are not the schema's field names in snake_case (the writer
#: applies the inverse).
OPTION_FIELD_NAMES = {
    "activation": "FusedActivationFunction",
    "dilation_h": "DilationHFactor",
    "dilation_w": "DilationWFactor",
    "filter_h": "FilterHeight",
    "filter_w": "FilterWidth",
}

_TYPE_NAMES = {v: n for n, v in vars(tflite.TensorType).items() if not n.startswith("_")}
#: TFLite tensor types with a NumPy equivalent (the others keep raw bytes).
_NUMPY_TYPES = frozenset((
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
    "uint32", "uint64", "bool", "complex64", "complex128"))
_OP_NAMES = {v: n for n, v in vars(tflite.BuiltinOperator).items() if not n.startswith("_")}
_OPTIONS_TABLES = {v: n for n, v in vars(tflite.BuiltinOptions).items()
                   if not n.startswith("_")}
_PADDINGS = {v: n for n, v in vars(tflite.Padding).items() if not n.startswith("_")}
_ACTIVATIONS = {v: n for n, v in vars(tflite.ActivationFunctionType).items()
                if not n.startswith("_")}
_OPTION_NAMES = {field: name for name, field in OPTION_FIELD_NAMES.items()}
#: Options-table methods that are not option fields.
_NOT_FIELDS = re.compile(r"^(Init|GetRootAs.*|.*BufferHasIdentifier|.*Length|.*IsNone|.*AsNumpy)$")

# Exceptions the generated accessors raise on out-of-range offsets or bad data.
_DECODE_ERRORS = (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError,
                  OverflowError, MemoryError)


def read_tflite(source: str | os.PathLike | bytes) -> Graph:
    """Read a TFLite model (a path, or the file's bytes) into a ``Graph``.

    Repeated or empty tensor names get ``:<tensor index>`` appended, so names are unique.
    Constant buffers become ``Tensor.data`` arrays of the tensor's dtype and shape (types NumPy
    lacks, such as ``int4`` or ``string``, keep their raw bytes as a 1-D ``uint8`` array).

    Raises
    ------
    ModelFormatError
        The file is not a TFLite flatbuffer, or is truncated or corrupt.
    UnsupportedModelError
        More than one subgraph, or an activation with batch size != 1.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf, label = bytes(source), "<bytes>"
    else:
        label = os.fspath(source)
        with open(label, "rb") as f:
            buf = f.read()
    if len(buf) < 8:
        raise ModelFormatError(f"{label}: {len(buf)} bytes is too short for a TFLite file")
    if not tflite.Model.ModelBufferHasIdentifier(buf, 0):
        raise ModelFormatError(
            f"{label}: not a TFLite flatbuffer (file identifier {buf[4:8]!r}, expected "
            "b'TFL3')")
    try:
        return _read_model(buf, label)
    except (ModelFormatError, UnsupportedModelError):
        raise
    except _DECODE_ERRORS as e:
        raise ModelFormatError(f"{label}: corrupt or truncated TFLite flatbuffer "
                               f"({type(e).__name__}: {e})") from e


def _read_model(buf: bytes, label: str) -> Graph:
    model = tflite.Model.GetRootAs(buf, 0)
    n_subgraphs = _checked_len(model.SubgraphsLength(), buf, label, "subgraphs")
    if n_subgraphs != 1:
        raise UnsupportedModelError(
            f"{label}: model has {n_subgraphs} subgraphs; dwsep supports exactly 1 (no "
            "control flow or signatures with separate graphs)")
    opcodes = [_opcode_name(model.OperatorCodes(i))
               for i in range(_checked_len(model.OperatorCodesLength(), buf, label, "opcodes"))]
    n_buffers = _checked_len(model.BuffersLength(), buf, label, "buffers")
    sg = model.Subgraphs(0)

    n_tensors = _checked_len(sg.TensorsLength(), buf, label, "tensors")
    names = _unique_names([_decode_name(sg.Tensors(i).Name()) for i in range(n_tensors)])
    tensors = {names[i]: _read_tensor(model, sg.Tensors(i), names[i], buf, label, n_buffers)
               for i in range(n_tensors)}

    def tensor_names(indices: np.ndarray, what: str) -> list[str | None]:
        out = []
        for i in indices.tolist():
            if not -1 <= i < n_tensors:
                raise ModelFormatError(f"{label}: {what} refers to tensor {i}, model has "
                                       f"{n_tensors}")
            out.append(None if i == -1 else names[i])
        return out

    operators = []
    for i in range(_checked_len(sg.OperatorsLength(), buf, label, "operators")):
        op = sg.Operators(i)
        if not 0 <= op.OpcodeIndex() < len(opcodes):
            raise ModelFormatError(f"{label}: operator {i} has opcode index {op.OpcodeIndex()},"
                                   f" model has {len(opcodes)} opcodes")
        opcode = opcodes[op.OpcodeIndex()]
        operators.append(Operator(
            opcode=opcode,
            inputs=tensor_names(_int_vector(op.InputsAsNumpy()), f"{opcode} {i} input"),
            outputs=tensor_names(_int_vector(op.OutputsAsNumpy()), f"{opcode} {i} output"),
            options=_read_options(op), index=i))

    graph = Graph(tensors=tensors, operators=operators,
                  inputs=tensor_names(_int_vector(sg.InputsAsNumpy()), "graph input"),
                  outputs=tensor_names(_int_vector(sg.OutputsAsNumpy()), "graph output"))
    _check_batch(graph, label)
    return graph


def _unique_names(raw: list[str]) -> list[str]:
    """Keep unique names; a repeated or empty name ``n`` of tensor ``i`` becomes ``n:i``
    (plus ``_`` until it collides with no other name)."""
    counts = Counter(raw)
    taken = {n for n in raw if n and counts[n] == 1}
    names = []
    for i, n in enumerate(raw):
        if not (n and counts[n] == 1):
            n = f"{n}:{i}"
            while n in taken:
                n += "_"
            taken.add(n)
        names.append(n)
    return names


def _checked_len(n: int, buf: bytes, label: str, what: str) -> int:
    """A vector of tables needs 4 bytes per element: a larger count is corruption (and would
    otherwise make us loop over garbage for a long time)."""
    if n * 4 > len(buf):
        raise ModelFormatError(f"{label}: {n} {what} cannot fit in {len(buf)} bytes")
    return n


def _int_vector(v) -> np.ndarray:
    # The generated *AsNumpy accessors return the int 0 for an absent vector.
    return np.zeros(0, np.int64) if isinstance(v, int) else v.astype(np.int64)


def _decode_name(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8")


def _opcode_name(code) -> str:
    # TFLite's GetBuiltinCode: builtin codes above 126 only fit the int32 field; older files
    # only set the int8 one.
    value = max(code.DeprecatedBuiltinCode(), code.BuiltinCode())
    if value == tflite.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{_decode_name(code.CustomCode())}"
    return _OP_NAMES.get(value, f"UNKNOWN_BUILTIN_{value}")


def _read_tensor(model, t, name: str, buf: bytes, label: str, n_buffers: int) -> Tensor:
    shape = tuple(_int_vector(t.ShapeAsNumpy()).tolist())
    if any(d < 0 for d in shape):
        raise ModelFormatError(f"{label}: tensor {name!r} has negative dimension in {shape}")
    dtype = _TYPE_NAMES.get(t.Type(), f"type{t.Type()}").lower()
    scale = np.zeros(0, np.float32)
    zero_point = np.zeros(0, np.int64)
    qdim = 0
    q = t.Quantization()
    if q is not None:
        if not q.ScaleIsNone():
            scale = q.ScaleAsNumpy().astype(np.float32)
        if not q.ZeroPointIsNone():
            zero_point = q.ZeroPointAsNumpy().astype(np.int64)
        qdim = q.QuantizedDimension()
    data = None
    if not 0 <= t.Buffer() < n_buffers:
        raise ModelFormatError(f"{label}: tensor {name!r} refers to buffer {t.Buffer()}, model "
                               f"has {n_buffers}")
    raw = _buffer_bytes(model.Buffers(t.Buffer()), buf, label, name)
    if raw:
        data = _constant(raw, dtype, shape, name, label)
    return Tensor(name=name, shape=shape, dtype=dtype, scale=scale, zero_point=zero_point,
                  quantized_dimension=qdim, data=data)


def _buffer_bytes(buffer, buf: bytes, label: str, name: str) -> bytes:
    """A buffer's bytes: inline ``data``, or for models over 2 GB ``offset``/``size`` into the
    file after the flatbuffer (an offset of 0 or 1 means "no external data")."""
    if buffer.Offset() > 1:
        end = buffer.Offset() + buffer.Size()
        if end > len(buf):
            raise ModelFormatError(f"{label}: tensor {name!r} data at bytes "
                                   f"{buffer.Offset()}..{end} lies beyond the file's end "
                                   f"({len(buf)} bytes): truncated?")
        return buf[buffer.Offset():end]
    if buffer.DataIsNone():
        return b""
    return buffer.DataAsNumpy().tobytes()


def _constant(raw: bytes, dtype: str, shape: tuple[int, ...], name: str, label: str):
    if dtype not in _NUMPY_TYPES:
        return np.frombuffer(raw, np.uint8)
    np_dtype = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    if len(raw) != expected:
        raise ModelFormatError(f"{label}: tensor {name!r} ({dtype}{list(shape)}) needs "
                               f"{expected} bytes of data, its buffer has {len(raw)}")
    return np.frombuffer(raw, np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))


def _read_options(op) -> dict:
    """The builtin options table as a dict: every field of the schema's options table, named in
    snake_case (``StrideH`` -> ``stride_h``; ``FusedActivationFunction`` -> ``activation``,
    ``DilationHFactor`` -> ``dilation_h``, ``FilterHeight`` -> ``filter_h``), ``padding`` and
    ``activation`` as enum names, vectors as lists."""
    table_name = _OPTIONS_TABLES.get(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    if table_name in (None, "NONE") or table is None:
        return {}
    cls = getattr(importlib.import_module(f"tflite.{table_name}"), table_name)
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    options = {}
    for field in dir(cls):
        if field.startswith("_") or _NOT_FIELDS.match(field):
            continue
        key = _OPTION_NAMES.get(field) or re.sub(r"(?<!^)(?=[A-Z])", "_", field).lower()
        if hasattr(cls, f"{field}AsNumpy"):
            options[key] = _int_vector(getattr(obj, f"{field}AsNumpy")()).tolist()
            continue
        value = getattr(obj, field)()
        if isinstance(value, (int, float)):
            options[key] = value
    if "padding" in options:
        options["padding"] = _PADDINGS.get(options["padding"], options["padding"])
    if "activation" in options:
        options["activation"] = _ACTIVATIONS.get(options["activation"], options["activation"])
    return options


def _check_batch(graph: Graph, label: str) -> None:
    """Activations are NHWC batch 1: the batch is dimension 0 of each graph input of rank >= 2
    and of every non-constant rank-4 tensor."""
    for name, t in graph.tensors.items():
        if t.is_constant or not t.shape:
            continue
        if (len(t.shape) == 4 or (name in graph.inputs and len(t.shape) >= 2)) \
                and t.shape[0] != 1:
            raise UnsupportedModelError(
                f"{label}: tensor {name!r} has batch size {t.shape[0]} (shape {list(t.shape)}); "
                "dwsep runs batch 1, re-export the model with batch 1")
