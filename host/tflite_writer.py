"""Write ``.tflite`` files: a small model builder over the ``tflite`` schema package, plus
random depthwise-separable test layers.

``ModelBuilder`` collects tensors and operators in Python and serializes them with
``flatbuffers.Builder`` and the generated ``tflite.*`` builder functions in ``finish()``. Option
names are the ones ``host.tflite_reader`` produces (``stride_h``, ``padding="SAME"``,
``activation="RELU6"``, ...), so a written model reads back with the same options.

``dwsep_layer_model(spec)`` builds the layer the accelerator fuses: int8 input ->
DEPTHWISE_CONV_2D -> CONV_2D 1x1 -> output, quantized like a real converter would (per-channel
symmetric weights, int32 bias with scale ``s_in * s_w[c]``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import flatbuffers
import numpy as np
import tflite

from .tflite_reader import OPTION_FIELD_NAMES

__all__ = [
    "ModelBuilder", "LayerSpec", "random_layer_spec", "dwsep_layer_model", "single_op_model",
    "layer_tensors",
]

#: Builtin options table and operator-code version written for each supported op (the version
#: is the lowest one whose kernel accepts int8 per-channel tensors).
_OPS = {
    "ADD": ("AddOptions", 2),
    "AVERAGE_POOL_2D": ("Pool2DOptions", 2),
    "CONV_2D": ("Conv2DOptions", 3),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", 3),
    "DEQUANTIZE": ("DequantizeOptions", 2),
    "FULLY_CONNECTED": ("FullyConnectedOptions", 4),
    "MAX_POOL_2D": ("Pool2DOptions", 2),
    "MEAN": ("ReducerOptions", 2),
    "PAD": ("PadOptions", 2),
    "QUANTIZE": ("QuantizeOptions", 2),
    "RESHAPE": ("ReshapeOptions", 1),
    "SOFTMAX": ("SoftmaxOptions", 2),
}

#: Defaults filled in when ``add_operator`` is not given the option (the schema's own defaults,
#: stride 0 and depth multiplier 0, are not usable values).
_DEFAULTS = {
    "CONV_2D": dict(padding="VALID", stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                    activation="NONE"),
    "DEPTHWISE_CONV_2D": dict(padding="VALID", stride_h=1, stride_w=1, dilation_h=1,
                              dilation_w=1, activation="NONE", depth_multiplier=1),
    "AVERAGE_POOL_2D": dict(padding="VALID", stride_h=1, stride_w=1, activation="NONE"),
    "MAX_POOL_2D": dict(padding="VALID", stride_h=1, stride_w=1, activation="NONE"),
    "ADD": dict(activation="NONE"),
    "FULLY_CONNECTED": dict(activation="NONE"),
    "SOFTMAX": dict(beta=1.0),
}

_TENSOR_TYPES = {
    name.lower(): value for name, value in vars(tflite.TensorType).items()
    if not name.startswith("_")
}


def _enum_value(enum_cls, name: str) -> int:
    try:
        return getattr(enum_cls, name)
    except AttributeError:
        allowed = ", ".join(n for n in vars(enum_cls) if not n.startswith("_"))
        raise ValueError(f"unknown {enum_cls.__name__} {name!r}; allowed: {allowed}") from None


def _field_name(option: str) -> str:
    return OPTION_FIELD_NAMES.get(option) or "".join(p.capitalize() for p in option.split("_"))


@dataclass
class _TensorRecord:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    quantized_dimension: int
    data: bytes | None


@dataclass
class _OperatorRecord:
    opcode: str
    inputs: list[int]
    outputs: list[int]
    options: dict


class ModelBuilder:
    """Collects one subgraph's tensors and operators; ``finish()`` serializes the model.

    Buffer 0 is the empty buffer (TFLite convention); each constant tensor gets its own buffer,
    16-byte aligned.
    """

    def __init__(self, description: str = "dwsep test model"):
        self.description = description
        self._tensors: list[_TensorRecord] = []
        self._operators: list[_OperatorRecord] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def add_tensor(self, name: str, shape, dtype: str = "int8", scale=None, zero_point=None,
                   quantized_dimension: int = 0, data: np.ndarray | None = None) -> int:
        """Add a tensor and return its index.

        ``scale``/``zero_point`` are scalars (per-tensor) or 1-D sequences (per-channel along
        ``quantized_dimension``); ``None`` writes no quantization. ``data`` makes the tensor a
        constant; it is cast to ``dtype`` and must have ``shape``.
        """
        shape = tuple(int(d) for d in shape)
        if dtype not in _TENSOR_TYPES:
            raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(_TENSOR_TYPES)}")
        raw = None
        if data is not None:
            arr = np.asarray(data)
            if arr.shape != shape:
                raise ValueError(f"tensor {name!r}: data shape {arr.shape} != shape {shape}")
            raw = arr.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
        if scale is not None:
            scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zero_point = np.atleast_1d(np.asarray(
                0 if zero_point is None else zero_point, dtype=np.int64))
            if zero_point.size == 1 and scale.size > 1:
                zero_point = np.full(scale.size, zero_point[0], np.int64)
        self._tensors.append(_TensorRecord(name, shape, dtype, scale, zero_point,
                                           int(quantized_dimension), raw))
        return len(self._tensors) - 1

    def add_operator(self, opcode: str, inputs, outputs, **options) -> int:
        """Add an operator (``opcode`` a builtin name from ``_OPS``) and return its index.

        ``inputs``/``outputs`` are tensor indices (-1 for an absent optional input);
        ``options`` use the reader's names, e.g. ``stride_h=2, padding="SAME",
        activation="RELU6", depth_multiplier=1, new_shape=[1, 10]``.
        """
        if opcode not in _OPS:
            raise ValueError(f"ModelBuilder cannot write op {opcode!r}; supported: "
                             f"{', '.join(sorted(_OPS))}")
        for index in [*inputs, *outputs]:
            if not -1 <= index < len(self._tensors):
                raise ValueError(f"{opcode}: tensor index {index} does not exist")
        merged = {**_DEFAULTS.get(opcode, {}), **options}
        self._operators.append(_OperatorRecord(opcode, list(inputs), list(outputs), merged))
        return len(self._operators) - 1

    def finish(self) -> bytes:
        """Serialize the model: file identifier ``TFL3``, schema version 3."""
        b = flatbuffers.Builder(1024)
        opcodes = sorted({op.opcode for op in self._operators})
        opcode_index = {name: i for i, name in enumerate(opcodes)}

        buffers = [self._buffer(b, None)]
        buffer_of = []
        for t in self._tensors:
            if t.data is None:
                buffer_of.append(0)
            else:
                buffer_of.append(len(buffers))
                buffers.append(self._buffer(b, t.data))
        tensors = [self._tensor(b, t, buf) for t, buf in zip(self._tensors, buffer_of, strict=True)]
        operators = [self._operator(b, op, opcode_index[op.opcode]) for op in self._operators]

        tensors_vec = _offset_vector(b, tflite.SubGraphStartTensorsVector, tensors)
        operators_vec = _offset_vector(b, tflite.SubGraphStartOperatorsVector, operators)
        inputs_vec = b.CreateNumpyVector(np.asarray(self.inputs, np.int32))
        outputs_vec = b.CreateNumpyVector(np.asarray(self.outputs, np.int32))
        name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors_vec)
        tflite.SubGraphAddInputs(b, inputs_vec)
        tflite.SubGraphAddOutputs(b, outputs_vec)
        tflite.SubGraphAddOperators(b, operators_vec)
        tflite.SubGraphAddName(b, name)
        subgraph = tflite.SubGraphEnd(b)

        codes = [self._opcode(b, name) for name in opcodes]
        codes_vec = _offset_vector(b, tflite.ModelStartOperatorCodesVector, codes)
        subgraphs_vec = _offset_vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
        buffers_vec = _offset_vector(b, tflite.ModelStartBuffersVector, buffers)
        description = b.CreateString(self.description)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddDescription(b, description)
        tflite.ModelAddBuffers(b, buffers_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _buffer(b: flatbuffers.Builder, data: bytes | None) -> int:
        vec = None
        if data:
            # TFLite kernels read int32/float constants in place: keep them aligned.
            b.Prep(16, len(data))
            vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8))
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return tflite.BufferEnd(b)

    @staticmethod
    def _tensor(b: flatbuffers.Builder, t: _TensorRecord, buffer: int) -> int:
        quant = None
        if t.scale is not None:
            scale = b.CreateNumpyVector(t.scale.astype("<f4"))
            zero_point = b.CreateNumpyVector(t.zero_point.astype("<i8"))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero_point)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
            quant = tflite.QuantizationParametersEnd(b)
        shape = b.CreateNumpyVector(np.asarray(t.shape, "<i4"))
        name = b.CreateString(t.name)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, _TENSOR_TYPES[t.dtype])
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    @staticmethod
    def _operator(b: flatbuffers.Builder, op: _OperatorRecord, opcode_index: int) -> int:
        table = _OPS[op.opcode][0]
        options = _options_table(b, table, op.opcode, op.options)
        inputs = b.CreateNumpyVector(np.asarray(op.inputs, "<i4"))
        outputs = b.CreateNumpyVector(np.asarray(op.outputs, "<i4"))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode_index)
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, table))
        tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)

    @staticmethod
    def _opcode(b: flatbuffers.Builder, name: str) -> int:
        code = getattr(tflite.BuiltinOperator, name)
        tflite.OperatorCodeStart(b)
        # Codes above 126 live only in builtin_code; the int8 field then holds the
        # PLACEHOLDER_FOR_GREATER_OP_CODES marker (127), as the converter writes it.
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, _OPS[name][1])
        return tflite.OperatorCodeEnd(b)


def _offset_vector(b: flatbuffers.Builder, start, offsets: list[int]) -> int:
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _options_table(b: flatbuffers.Builder, table: str, opcode: str, options: dict) -> int:
    """Write a builtin options table through the schema's ``<table>Add<Field>`` functions.

    Enum options (``padding``, ``activation``) are given by name; list values are written as
    int32 vectors (``new_shape``), which must be created before the table is started.
    """
    module = importlib.import_module(f"tflite.{table}")
    adders = []
    for key, value in options.items():
        adder = getattr(module, f"{table}Add{_field_name(key)}", None)
        if adder is None:
            raise ValueError(f"{opcode} has no option {key!r}")
        if key == "padding":
            value = _enum_value(tflite.Padding, value)
        elif key == "activation":
            value = _enum_value(tflite.ActivationFunctionType, value)
        elif isinstance(value, (list, tuple, np.ndarray)):
            value = b.CreateNumpyVector(np.asarray(value, "<i4"))
        adders.append((adder, value))
    getattr(module, f"{table}Start")(b)
    for adder, value in adders:
        adder(b, value)
    return getattr(module, f"{table}End")(b)


# --------------------------------------------------------------------------------------------
# Random depthwise-separable layers


@dataclass(frozen=True)
class LayerSpec:
    """One depthwise-separable layer: ``[1,h,w,c]`` -> DEPTHWISE_CONV_2D (``kernel`` x
    ``kernel``, ``stride``, ``dilation``, ``padding``, ``depth_multiplier``, ``dw_activation``)
    -> CONV_2D 1x1 to ``c_out`` channels (``pw_activation``). ``seed`` draws the weights and
    the quantization; ``extreme`` draws scales from a much wider range (effective multipliers
    from about 2**-31 up to 2**4, large biases)."""
    h: int
    w: int
    c: int
    depth_multiplier: int
    kernel: int
    stride: int
    dilation: int
    padding: str
    dw_activation: str
    c_out: int
    pw_activation: str
    seed: int
    extreme: bool = False

    def __post_init__(self):
        for name in ("h", "w", "c", "depth_multiplier", "kernel", "stride", "dilation",
                     "c_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be positive, not {getattr(self, name)}")
        if self.padding not in ("SAME", "VALID"):
            raise ValueError(f"'padding' must be 'SAME' or 'VALID', not {self.padding!r}")
        if self.dw_out_hw[0] < 1 or self.dw_out_hw[1] < 1:
            raise ValueError(
                f"VALID {self.kernel}x{self.kernel} dilation {self.dilation} window does not fit "
                f"a {self.h}x{self.w} input; use SAME or a larger input")

    @property
    def effective_kernel(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    @property
    def dw_out_hw(self) -> tuple[int, int]:
        """TFLite's output size: SAME ``ceil(n/s)``, VALID ``(n + s - k_eff) // s``."""
        s, k = self.stride, self.effective_kernel
        if self.padding == "SAME":
            return (-(-self.h // s), -(-self.w // s))
        return ((self.h + s - k) // s, (self.w + s - k) // s)


def random_layer_spec(rng: np.random.Generator, *, k_choices=(1, 2, 3, 4, 5, 7), max_hw=32,
                      max_c=64, max_c_out=64, dilations=(1, 2), strides=(1, 2),
                      paddings=("SAME", "VALID"), activations=("NONE", "RELU", "RELU6"),
                      max_depth_multiplier=3, extreme_fraction=0.15) -> LayerSpec:
    """Draw a valid ``LayerSpec``: a VALID window always fits (the input is enlarged to the
    effective kernel when needed, or the padding switched to SAME if it cannot be)."""
    k = int(rng.choice(k_choices))
    d = int(rng.choice(dilations))
    padding = str(rng.choice(paddings))
    k_eff = (k - 1) * d + 1
    min_hw = 1
    if padding == "VALID":
        if k_eff > max_hw:
            padding = "SAME"
        else:
            min_hw = k_eff
    return LayerSpec(
        h=int(rng.integers(min_hw, max_hw + 1)), w=int(rng.integers(min_hw, max_hw + 1)),
        c=int(rng.integers(1, max_c + 1)),
        depth_multiplier=int(rng.integers(1, max_depth_multiplier + 1)),
        kernel=k, stride=int(rng.choice(strides)), dilation=d, padding=padding,
        dw_activation=str(rng.choice(activations)), c_out=int(rng.integers(1, max_c_out + 1)),
        pw_activation=str(rng.choice(activations)), seed=int(rng.integers(0, 2**31)),
        extreme=bool(rng.random() < extreme_fraction))


def _log_uniform(rng, lo, hi, size=None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _random_input_quant(rng, extreme: bool) -> tuple[float, int]:
    scale = _log_uniform(rng, 1e-6, 1e2) if extreme else _log_uniform(rng, 2e-3, 0.5)
    return float(np.float32(scale)), int(rng.integers(-128, 128))


def _random_weights(rng, shape, n_channels: int, axis: int, extreme: bool):
    """Per-channel symmetric int8 weights: each channel scaled to a random peak <= 127,
    scale log-uniform, zero point 0."""
    peak = rng.integers(1, 128, size=n_channels)
    q = np.round(rng.uniform(-1.0, 1.0, size=shape) * np.expand_dims(
        peak, tuple(i for i in range(len(shape)) if i != axis))).astype(np.int8)
    lo, hi = (1e-6, 1e1) if extreme else (1e-3, 0.1)
    return q, _log_uniform(rng, lo, hi, n_channels).astype(np.float32)


def _output_quant(rng, acc_std: float, extreme: bool) -> tuple[float, int]:
    """Output scale from the real accumulator spread so that outputs use the int8 range but are
    not all saturated, zero point within [-64, 64]; ``extreme`` spreads the scale by up to
    2**+-15 more and the zero point over [-128, 127]."""
    if extreme:
        spread, zp_max = _log_uniform(rng, 2.0**-15, 2.0**15), 128
    else:
        spread, zp_max = _log_uniform(rng, 0.5, 2.0), 65
    # LiteRT refuses (at prepare) a fused RELU6 whose bound 6 / scale overflows int32.
    scale = max(acc_std / 40.0 * spread, 2.0**-26)
    return float(np.float32(scale)), int(rng.integers(-zp_max, zp_max))


def _random_bias(rng, acc_std_q: np.ndarray, extreme: bool) -> np.ndarray:
    """int32 bias (scale ``s_in * s_w[c]``, zero point 0) about the accumulator's size."""
    spread = 2.0**8 if extreme else 1.0
    bias = rng.normal(0.0, 1.0, acc_std_q.size) * acc_std_q * spread
    return np.clip(np.round(bias), -2**28, 2**28).astype(np.int32)


_INPUT_STD = 74.0  # standard deviation of an int8 value drawn uniformly from [-128, 127]


def _random_conv(rng, in_scale: float, shape, axis: int, taps: int, extreme: bool) -> dict:
    """Weights (``shape``, channels along ``axis``), scales and bias of one conv, and the real
    scale of its output: int accumulator spread per channel is about
    ``sqrt(taps) * std(x - zp) * rms(w)``."""
    w, scales = _random_weights(rng, shape, shape[axis], axis, extreme)
    other = tuple(i for i in range(len(shape)) if i != axis)
    acc_q = np.sqrt(taps) * _INPUT_STD * np.sqrt(np.mean(w.astype(np.float64) ** 2, other) + 1)
    bias = _random_bias(rng, acc_q, extreme)
    out_scale, out_zp = _output_quant(rng, float(np.mean(acc_q * in_scale * scales)), extreme)
    return dict(w=w, scales=scales, bias=bias, out_scale=out_scale, out_zp=out_zp)


def layer_tensors(spec: LayerSpec) -> dict:
    """The random weights and quantization of ``spec``, drawn from ``spec.seed``:
    ``{"in_scale", "in_zp", "dw": {...}, "pw": {...}, "conv": {...}}``, each conv a dict
    ``w, scales, bias, out_scale, out_zp``. ``dw`` has weights ``[1,k,k,C*m]``, ``pw``
    ``[C_out,1,1,C*m]`` (its input is ``dw``'s output), ``conv`` ``[C_out,k,k,C]`` (the
    spec's window as a full convolution, for ``single_op_model``).
    """
    rng = np.random.default_rng(spec.seed)
    k, cm = spec.kernel, spec.c * spec.depth_multiplier
    in_scale, in_zp = _random_input_quant(rng, spec.extreme)
    dw = _random_conv(rng, in_scale, (1, k, k, cm), 3, k * k, spec.extreme)
    pw = _random_conv(rng, dw["out_scale"], (spec.c_out, 1, 1, cm), 0, cm, spec.extreme)
    conv = _random_conv(rng, in_scale, (spec.c_out, k, k, spec.c), 0, k * k * spec.c,
                        spec.extreme)
    return dict(in_scale=in_scale, in_zp=in_zp, dw=dw, pw=pw, conv=conv)


def _add_conv(mb: ModelBuilder, opcode: str, name: str, x: int, in_scale: float, q: dict,
              out_hw: tuple[int, int], **options) -> int:
    """Weights, bias and output tensors of one conv, and the op itself; returns the output."""
    axis = 3 if opcode == "DEPTHWISE_CONV_2D" else 0
    c = q["w"].shape[axis]
    w = mb.add_tensor(f"{name}/weights", q["w"].shape, "int8", q["scales"], 0, axis, q["w"])
    bias = mb.add_tensor(f"{name}/bias", (c,), "int32", in_scale * q["scales"].astype(
        np.float64), 0, 0, q["bias"])
    y = mb.add_tensor(f"{name}/out", (1, *out_hw, c), "int8", q["out_scale"], q["out_zp"])
    mb.add_operator(opcode, [x, w, bias], [y], **options)
    return y


def _window_options(spec: LayerSpec) -> dict:
    return dict(padding=spec.padding, stride_h=spec.stride, stride_w=spec.stride,
                dilation_h=spec.dilation, dilation_w=spec.dilation)


def dwsep_layer_model(spec: LayerSpec) -> bytes:
    """int8 ``[1,h,w,c]`` -> DEPTHWISE_CONV_2D -> CONV_2D 1x1 (stride 1, VALID) -> output.

    Tensor indices: 0 input, 3 DW output (the "mid" tensor), 6 output.
    """
    p = layer_tensors(spec)
    mb = ModelBuilder(f"dwsep layer {spec}")
    x = mb.add_tensor("input", (1, spec.h, spec.w, spec.c), "int8", p["in_scale"], p["in_zp"])
    mid = _add_conv(mb, "DEPTHWISE_CONV_2D", "dw", x, p["in_scale"], p["dw"], spec.dw_out_hw,
                    depth_multiplier=spec.depth_multiplier, activation=spec.dw_activation,
                    **_window_options(spec))
    y = _add_conv(mb, "CONV_2D", "pw", mid, p["dw"]["out_scale"], p["pw"], spec.dw_out_hw,
                  padding="VALID", activation=spec.pw_activation)
    mb.inputs, mb.outputs = [x], [y]
    return mb.finish()


def single_op_model(spec: LayerSpec, op: str) -> bytes:
    """One op alone on the int8 ``[1,h,w,c]`` input of ``spec``: ``"DEPTHWISE_CONV_2D"`` is
    the layer's depthwise part (``dw_activation``); ``"CONV_2D"`` is a full convolution with
    the same window (kernel, stride, dilation, padding) to ``c_out`` channels
    (``pw_activation``). Tensor indices: 0 input, 3 output."""
    p = layer_tensors(spec)
    mb = ModelBuilder(f"dwsep {op} {spec}")
    x = mb.add_tensor("input", (1, spec.h, spec.w, spec.c), "int8", p["in_scale"], p["in_zp"])
    if op == "DEPTHWISE_CONV_2D":
        y = _add_conv(mb, op, "dw", x, p["in_scale"], p["dw"], spec.dw_out_hw,
                      depth_multiplier=spec.depth_multiplier, activation=spec.dw_activation,
                      **_window_options(spec))
    elif op == "CONV_2D":
        y = _add_conv(mb, op, "conv", x, p["in_scale"], p["conv"], spec.dw_out_hw,
                      activation=spec.pw_activation, **_window_options(spec))
    else:
        raise ValueError(f"'op' must be 'DEPTHWISE_CONV_2D' or 'CONV_2D', not {op!r}")
    mb.inputs, mb.outputs = [x], [y]
    return mb.finish()
