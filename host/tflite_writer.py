"""Write ``.tflite`` files: a small model builder over the ``tflite`` schema package, plus
random test models: depthwise-separable layers, single ops, MobileNet-like networks.

``ModelBuilder`` collects tensors and operators in Python and serializes them with
``flatbuffers.Builder`` and the generated ``tflite.*`` builder functions in ``finish()``. Option
names are the ones ``host.tflite_reader`` produces (``stride_h``, ``padding="SAME"``,
``activation="RELU6"``, ...), so a written model reads back with the same options.

``dwsep_layer_model(spec)`` builds the layer the accelerator fuses: int8 input ->
DEPTHWISE_CONV_2D -> CONV_2D 1x1 -> output, quantized like a real converter would (per-channel
symmetric weights, int32 bias with scale ``s_in * s_w[c]``).

``pad_model``, ``add_model``, ``average_pool_model``, ``mean_model``,
``fully_connected_model``, ``reshape_model``, ``quantize_model``, ``unary_model`` (HARD_SWISH,
LOGISTIC, TANH, LEAKY_RELU, RELU, RELU6, RELU_N1_TO_1) and ``mul_model`` build one op with the
given parameters; ``random_op_model(op, seed)`` draws them. ``mobilenet_like_model(spec)``
builds a small MobileNetV2-like network (PAD + CONV_2D stem, inverted residual blocks with
residual ADDs, head, global AVERAGE_POOL_2D or MEAN, FULLY_CONNECTED, RESHAPE), quantized as a
converter would after batch-norm folding; ``random_mobilenet_spec`` draws its ``MobileNetSpec``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import flatbuffers
import numpy as np
import tflite

from ..hw.config import REQUANT_INPUT_BITS
from .compiler import PACKED_WEIGHT_MAX
from .numerics import quantize_multiplier, requant_input_extremes
from .reference import padding_amounts
from .tflite_reader import OPTION_FIELD_NAMES

__all__ = [
    "ModelBuilder", "LayerSpec", "random_layer_spec", "dwsep_layer_model", "single_op_model",
    "layer_tensors", "pad_model", "add_model", "average_pool_model", "mean_model",
    "fully_connected_model", "pool_fc_model", "reshape_model", "quantize_model",
    "UNARY_MODEL_OPS", "unary_model", "mul_model", "RANDOM_OPS",
    "random_op_model", "BlockSpec", "InvertedResidualSpec", "MobileNetSpec",
    "inverted_residual_model", "mobilenet_like_model", "random_mobilenet_spec",
]

#: Builtin options table (None: the op has none) and operator-code version written for each
#: supported op (the version is the lowest one whose kernel accepts int8 (per-channel) tensors).
_OPS = {
    "ADD": ("AddOptions", 2),
    "AVERAGE_POOL_2D": ("Pool2DOptions", 2),
    "CONV_2D": ("Conv2DOptions", 3),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", 3),
    "DEQUANTIZE": ("DequantizeOptions", 2),
    "FULLY_CONNECTED": ("FullyConnectedOptions", 4),
    "HARD_SWISH": ("HardSwishOptions", 1),
    "LEAKY_RELU": ("LeakyReluOptions", 1),
    "LOGISTIC": (None, 2),
    "MAX_POOL_2D": ("Pool2DOptions", 2),
    "MEAN": ("ReducerOptions", 2),
    "MUL": ("MulOptions", 2),
    "PAD": ("PadOptions", 2),
    "PADV2": ("PadV2Options", 2),
    "QUANTIZE": ("QuantizeOptions", 2),
    "RELU": (None, 2),
    "RELU6": (None, 2),
    "RELU_N1_TO_1": (None, 1),
    "RESHAPE": ("ReshapeOptions", 1),
    "SOFTMAX": ("SoftmaxOptions", 2),
    "TANH": (None, 2),
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
    "MUL": dict(activation="NONE"),
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
        if table is None and op.options:
            raise ValueError(f"{op.opcode} has no options, was given {sorted(op.options)}")
        options = None if table is None else _options_table(b, table, op.opcode, op.options)
        inputs = b.CreateNumpyVector(np.asarray(op.inputs, "<i4"))
        outputs = b.CreateNumpyVector(np.asarray(op.outputs, "<i4"))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode_index)
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if options is not None:
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
    """Per-channel symmetric int8 weights: each channel scaled to a random peak <= 127
    (``PACKED_WEIGHT_MAX``: never -128, which the expand and pointwise arrays refuse), scale
    log-uniform, zero point 0."""
    peak = rng.integers(1, PACKED_WEIGHT_MAX + 1, size=n_channels)
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


def _random_conv(rng, in_scale: float, shape, axis: int, taps: int, extreme: bool,
                 in_rms: float = _INPUT_STD, in_zp: int | None = None) -> dict:
    """Weights (``shape``, channels along ``axis``), scales and bias of one conv, and the real
    scale of its output: int accumulator spread per channel is about
    ``sqrt(taps) * rms(x - zp) * rms(w)``, ``in_rms`` the input's ``rms(x - zp)``. With the
    input zero point ``in_zp`` (a conv whose output is requantized), the bias and output
    scale are then fitted to the requantizer's domain (:func:`_fit_requant_domain`)."""
    w, scales = _random_weights(rng, shape, shape[axis], axis, extreme)
    other = tuple(i for i in range(len(shape)) if i != axis)
    acc_q = np.sqrt(taps) * in_rms * np.sqrt(np.mean(w.astype(np.float64) ** 2, other) + 1)
    bias = _random_bias(rng, acc_q, extreme)
    acc_std = float(np.mean(acc_q * in_scale * scales))
    out_scale, out_zp = _output_quant(rng, acc_std, extreme)
    if in_zp is not None:
        w2d = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        bias, out_scale = _fit_requant_domain(w2d, bias, scales, in_scale, in_zp, out_scale)
    return dict(w=w, scales=scales, bias=bias, out_scale=out_scale, out_zp=out_zp,
                out_rms=acc_std / out_scale)


def _fit_requant_domain(w2d: np.ndarray, bias: np.ndarray, scales: np.ndarray,
                        in_scale: float, in_zp: int, out_scale: float
                        ) -> tuple[np.ndarray, float]:
    """``(bias, out_scale)`` such that the compiler can prove every channel's requantizer
    input fits ``REQUANT_INPUT_BITS`` (``compiler.check_requant_inputs``): while a channel
    can leave it, halve the output channels' multipliers (double ``out_scale``) if it is
    shifted left, else halve its bias; a channel whose int8 products alone exceed the domain
    (a big k x k x C conv of large weights) stays as drawn, and the compiler refuses it. Models
    from real quantizers are far inside the domain; this keeps the extreme random draws (huge
    biases, multipliers above 1) runnable."""
    half = 1 << (REQUANT_INPUT_BITS - 1)
    bias = bias.astype(np.int64)
    sums = w2d.astype(np.int64).sum(axis=1)
    while True:
        shift = np.array([quantize_multiplier(in_scale * float(s) / out_scale)[1]
                          for s in scales])
        v_min, v_max = requant_input_extremes(w2d, bias - in_zp * sums, shift)
        bad = ((v_min < -half) | (v_max >= half)).astype(bool)
        if not bad.any() or not (shift[bad] > 0).any() and not bias[bad].any():
            return bias.astype(np.int32), out_scale  # (else the products alone exceed it)
        if (shift[bad] > 0).any():
            out_scale = float(np.float32(out_scale * 2))
        else:
            bias = np.where(bad, np.trunc(bias / 2).astype(np.int64), bias)


def layer_tensors(spec: LayerSpec) -> dict:
    """The random weights and quantization of ``spec``, drawn from ``spec.seed``:
    ``{"in_scale", "in_zp", "dw": {...}, "pw": {...}, "conv": {...}}``, each conv a dict
    ``w, scales, bias, out_scale, out_zp, out_rms`` (``out_rms``: the output's expected
    ``rms(y - out_zp)`` in integer units, before any activation). ``dw`` has weights
    ``[1,k,k,C*m]``, ``pw`` ``[C_out,1,1,C*m]`` (its input is ``dw``'s output), ``conv``
    ``[C_out,k,k,C]`` (the spec's window as a full convolution, for ``single_op_model``).
    """
    rng = np.random.default_rng(spec.seed)
    k, cm = spec.kernel, spec.c * spec.depth_multiplier
    in_scale, in_zp = _random_input_quant(rng, spec.extreme)
    dw = _random_conv(rng, in_scale, (1, k, k, cm), 3, k * k, spec.extreme, in_zp=in_zp)
    pw = _random_conv(rng, dw["out_scale"], (spec.c_out, 1, 1, cm), 0, cm, spec.extreme,
                      in_zp=dw["out_zp"])
    conv = _random_conv(rng, in_scale, (spec.c_out, k, k, spec.c), 0, k * k * spec.c,
                        spec.extreme, in_zp=in_zp)
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


# --------------------------------------------------------------------------------------------
# Single-op models of the other MobileNet operators. ``quant`` arguments are ``(scale,
# zero_point)`` of a per-tensor int8 tensor; tensor 0 is the model's input.


def _start(description: str, shape, quant) -> tuple[ModelBuilder, int]:
    mb = ModelBuilder(description)
    x = mb.add_tensor("input", shape, "int8", *quant)
    mb.inputs = [x]
    return mb, x


def _end(mb: ModelBuilder, y: int) -> bytes:
    mb.outputs = [y]
    return mb.finish()


def pad_model(shape, paddings, quant, out_quant=None, *, constant: int | None = None,
              paddings_dtype: str = "int32") -> bytes:
    """int8 ``shape`` -> PAD (or PADV2 when ``constant`` is given: padded with that int8
    value) -> output. ``paddings`` is ``[[before, after]] * rank``; the output is quantized
    with ``out_quant`` (default: as the input, as converters write it)."""
    out_quant = quant if out_quant is None else out_quant
    p = np.asarray(paddings, np.int64)
    mb, x = _start(f"PAD {list(shape)} {p.tolist()}", shape, quant)
    inputs = [x, mb.add_tensor("paddings", p.shape, paddings_dtype, data=p)]
    if constant is not None:
        inputs.append(mb.add_tensor("constant_values", (1,), "int8", *out_quant,
                                    data=np.array([constant])))
    y = mb.add_tensor("output", tuple(np.asarray(shape) + p.sum(axis=1)), "int8", *out_quant)
    mb.add_operator("PAD" if constant is None else "PADV2", inputs, [y])
    return _end(mb, y)


def add_model(shape, quant, other: np.ndarray, other_quant, out_quant, *,
              activation: str = "NONE", other_first: bool = False) -> bytes:
    """int8 ``shape`` + the int8 constant ``other`` (any shape that broadcasts with ``shape``,
    quantized with ``other_quant``) -> ADD -> output quantized with ``out_quant``.
    ``other_first`` makes the constant ADD's first operand."""
    mb, x = _start(f"ADD {list(shape)} {list(other.shape)}", shape, quant)
    c = mb.add_tensor("other", other.shape, "int8", *other_quant, data=other)
    y = mb.add_tensor("output", np.broadcast_shapes(tuple(shape), other.shape), "int8",
                      *out_quant)
    mb.add_operator("ADD", [c, x] if other_first else [x, c], [y], activation=activation)
    return _end(mb, y)


def average_pool_model(shape, filter_hw, stride, padding: str, quant, out_quant=None, *,
                       activation: str = "NONE") -> bytes:
    """int8 ``[1, H, W, C]`` -> AVERAGE_POOL_2D -> output quantized with ``out_quant``
    (default: as the input, which TFLite assumes)."""
    out_quant = quant if out_quant is None else out_quant
    ho = padding_amounts(padding, shape[1], filter_hw[0], stride[0], 1)[2]
    wo = padding_amounts(padding, shape[2], filter_hw[1], stride[1], 1)[2]
    mb, x = _start(f"AVERAGE_POOL_2D {list(shape)} {filter_hw} {stride} {padding}", shape,
                   quant)
    y = mb.add_tensor("output", (shape[0], ho, wo, shape[3]), "int8", *out_quant)
    mb.add_operator("AVERAGE_POOL_2D", [x], [y], padding=padding, stride_h=stride[0],
                    stride_w=stride[1], filter_h=filter_hw[0], filter_w=filter_hw[1],
                    activation=activation)
    return _end(mb, y)


def mean_model(shape, axes, keep_dims: bool, quant, out_quant) -> bytes:
    """int8 ``shape`` -> MEAN over ``axes`` (int32 constant; negative and repeated axes are
    written as given) -> output quantized with ``out_quant``."""
    reduced = {a % len(shape) for a in axes}
    out_shape = tuple(1 if i in reduced else d for i, d in enumerate(shape)
                      if keep_dims or i not in reduced)
    mb, x = _start(f"MEAN {list(shape)} {list(axes)} keep_dims={keep_dims}", shape, quant)
    a = mb.add_tensor("axes", (len(axes),), "int32", data=np.asarray(axes))
    y = mb.add_tensor("output", out_shape, "int8", *out_quant)
    mb.add_operator("MEAN", [x, a], [y], keep_dims=bool(keep_dims))
    return _end(mb, y)


def fully_connected_model(in_shape, weights: np.ndarray, w_scales, bias: np.ndarray | None,
                          quant, out_quant, *, w_zp: int = 0, activation: str = "NONE",
                          keep_num_dims: bool = False) -> bytes:
    """int8 ``in_shape`` -> FULLY_CONNECTED (int8 ``weights [O, D]``, per-tensor when
    ``w_scales`` has one value (zero point ``w_zp``), else per-channel along dimension 0; int32
    ``bias [O]`` with scale ``s_in * s_w`` or None) -> output quantized with ``out_quant``:
    ``in_shape[:-1] + [O]`` with ``keep_num_dims``, else ``[size / D, O]``."""
    o, d = weights.shape
    w_scales = np.atleast_1d(np.asarray(w_scales, np.float32))
    size = int(np.prod(in_shape))
    out_shape = (*in_shape[:-1], o) if keep_num_dims else (size // d, o)
    mb, x = _start(f"FULLY_CONNECTED {list(in_shape)} -> {list(out_shape)}", in_shape, quant)
    w = mb.add_tensor("weights", weights.shape, "int8", w_scales, w_zp, 0, weights)
    b = -1
    if bias is not None:
        b = mb.add_tensor("bias", (o,), "int32", quant[0] * w_scales.astype(np.float64), 0, 0,
                          bias)
    y = mb.add_tensor("output", out_shape, "int8", *out_quant)
    mb.add_operator("FULLY_CONNECTED", [x, w, b], [y], activation=activation,
                    keep_num_dims=bool(keep_num_dims))
    return _end(mb, y)


def pool_fc_model(h: int, w: int, c: int, units: int, seed: int) -> bytes:
    """int8 ``[1, h, w, c]`` -> AVERAGE_POOL_2D (global) -> FULLY_CONNECTED to ``units`` (random
    per-tensor weights in -127..127 and bias, seeded by ``seed``) -> ``[1, units]``."""
    rng = np.random.default_rng(seed)
    mb, x = _start("pool + FC", (1, h, w, c), (0.05, 3))
    pooled = mb.add_tensor("pooled", (1, 1, 1, c), "int8", 0.05, 3)
    mb.add_operator("AVERAGE_POOL_2D", [x], [pooled], padding="VALID", stride_h=1,
                    stride_w=1, filter_h=h, filter_w=w)
    weights = mb.add_tensor("weights", (units, c), "int8", 0.01, 0, 0,
                            rng.integers(-127, 128, (units, c)))
    bias = mb.add_tensor("bias", (units,), "int32", 0.05 * 0.01, 0, 0,
                         rng.integers(-500, 500, units))
    y = mb.add_tensor("output", (1, units), "int8", 0.1, 0)
    mb.add_operator("FULLY_CONNECTED", [pooled, weights, bias], [y])
    return _end(mb, y)


def reshape_model(shape, new_shape, quant) -> bytes:
    """int8 ``shape`` -> RESHAPE to ``new_shape`` (given both as the int32 shape input and the
    ``new_shape`` option, as converters write it) -> output."""
    mb, x = _start(f"RESHAPE {list(shape)} -> {list(new_shape)}", shape, quant)
    s = mb.add_tensor("shape", (len(new_shape),), "int32", data=np.asarray(new_shape))
    y = mb.add_tensor("output", new_shape, "int8", *quant)
    mb.add_operator("RESHAPE", [x, s], [y], new_shape=list(new_shape))
    return _end(mb, y)


def quantize_model(shape, quant, out_quant) -> bytes:
    """int8 ``shape`` -> QUANTIZE (int8 -> int8 requantization) -> output."""
    mb, x = _start(f"QUANTIZE {list(shape)}", shape, quant)
    y = mb.add_tensor("output", shape, "int8", *out_quant)
    mb.add_operator("QUANTIZE", [x], [y])
    return _end(mb, y)


#: The int8 -> int8 elementwise ops ``unary_model`` writes (``reference.UNARY_OPS`` without
#: QUANTIZE, which ``quantize_model`` writes).
UNARY_MODEL_OPS = ("HARD_SWISH", "LOGISTIC", "TANH", "LEAKY_RELU", "RELU", "RELU6",
                   "RELU_N1_TO_1")


def unary_model(op: str, shape, quant, out_quant, **options) -> bytes:
    """int8 ``shape`` -> ``op`` (one of ``UNARY_MODEL_OPS``) -> output of the same shape
    quantized with ``out_quant``. ``options`` are the op's builtin options: ``alpha`` for
    LEAKY_RELU (default 0.2); the others have none."""
    if op not in UNARY_MODEL_OPS:
        raise ValueError(f"'op' must be one of {', '.join(UNARY_MODEL_OPS)}, not {op!r}")
    if op == "LEAKY_RELU":
        options = {"alpha": 0.2, **options}
    mb, x = _start(f"{op} {list(shape)} {options}", shape, quant)
    y = mb.add_tensor("output", shape, "int8", *out_quant)
    mb.add_operator(op, [x], [y], **options)
    return _end(mb, y)


def mul_model(shape, other_shape, quant, other_quant, out_quant, *,
              constant: np.ndarray | None = None, activation: str = "NONE",
              other_first: bool = False) -> bytes:
    """int8 ``shape`` times a second int8 operand of ``other_shape`` (quantized with
    ``other_quant``) -> MUL -> output (the broadcast shape) quantized with ``out_quant``.

    The second operand is the constant ``constant`` (any shape that broadcasts with
    ``shape``) or, when None, computed from the input as squeeze-and-excitation does:
    ``other_shape`` has ``shape``'s rank and each dimension equal or 1; a MEAN (keep_dims)
    over the dimensions ``other_shape`` reduces to 1 (a QUANTIZE when there are none)
    requantizes the input to ``other_quant``. ``other_first`` makes the second operand the
    MUL's first input."""
    shape, other_shape = tuple(shape), tuple(other_shape)
    mb, x = _start(f"MUL {list(shape)} {list(other_shape)}", shape, quant)
    if constant is not None:
        constant = np.asarray(constant)
        if constant.shape != other_shape:
            raise ValueError(f"'constant' has shape {list(constant.shape)}, not "
                             f"{list(other_shape)}")
        other = mb.add_tensor("other", other_shape, "int8", *other_quant, data=constant)
    else:
        if len(other_shape) != len(shape) or any(
                o not in (1, d) for o, d in zip(other_shape, shape, strict=True)):
            raise ValueError(f"a computed second operand {list(other_shape)} must keep or "
                             f"reduce to 1 each dimension of {list(shape)}")
        axes = [i for i, (o, d) in enumerate(zip(other_shape, shape, strict=True)) if o != d]
        other = mb.add_tensor("other", other_shape, "int8", *other_quant)
        if axes:
            a = mb.add_tensor("axes", (len(axes),), "int32", data=np.asarray(axes))
            mb.add_operator("MEAN", [x, a], [other], keep_dims=True)
        else:
            mb.add_operator("QUANTIZE", [x], [other])
    y = mb.add_tensor("output", np.broadcast_shapes(shape, other_shape), "int8", *out_quant)
    mb.add_operator("MUL", [other, x] if other_first else [x, other], [y],
                    activation=activation)
    return _end(mb, y)


#: The ops ``random_op_model`` draws models of.
RANDOM_OPS = ("PAD", "PADV2", "ADD", "AVERAGE_POOL_2D", "MEAN", "FULLY_CONNECTED", "RESHAPE",
              "QUANTIZE", "MUL", *UNARY_MODEL_OPS)
_ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _random_quant(rng, scale: float | None = None) -> tuple[float, int]:
    """Random int8 quantization; ``scale`` (times a random factor in [1/4, 4]) when given."""
    if scale is None:
        return _random_input_quant(rng, extreme=False)
    return float(np.float32(scale * _log_uniform(rng, 0.25, 4.0))), int(rng.integers(-128, 128))


def _random_image_shape(rng, max_hw: int = 12, max_c: int = 16) -> tuple[int, ...]:
    return (1, int(rng.integers(1, max_hw + 1)), int(rng.integers(1, max_hw + 1)),
            int(rng.integers(1, max_c + 1)))


def random_op_model(op: str, seed: int) -> bytes:
    """A random single-op model of ``op`` (one of ``RANDOM_OPS``), drawn from ``seed``: random
    shapes, options, activations and quantization (sometimes deliberately unlike what a
    converter writes: PAD/AVERAGE_POOL_2D with output quantization unlike the input's,
    LOGISTIC/TANH with another output quantization than the conventional one)."""
    rng = np.random.default_rng(seed)
    shape = _random_image_shape(rng)
    quant = _random_quant(rng)
    if op in ("PAD", "PADV2"):
        paddings = np.zeros((4, 2), np.int64)
        paddings[1:3] = rng.integers(0, 4, (2, 2))
        if rng.random() < 0.25:
            paddings[3] = rng.integers(0, 3, 2)
        out_quant = _random_quant(rng) if rng.random() < 0.2 else quant
        return pad_model(shape, paddings, quant, out_quant,
                         constant=int(rng.integers(-128, 128)) if op == "PADV2" else None,
                         paddings_dtype=str(rng.choice(["int32", "int64"])))
    if op == "ADD":
        other_shape = shape
        if rng.random() < 0.2:   # broadcasting: keep a random subset of the dimensions
            other_shape = tuple(d if rng.random() < 0.5 else 1 for d in shape)
            other_shape = other_shape[int(rng.integers(0, 4)):]
        other = rng.integers(-128, 128, other_shape).astype(np.int8)
        other_quant = _random_quant(rng, quant[0])
        out_quant = _random_quant(rng, quant[0] + other_quant[0])
        return add_model(shape, quant, other, other_quant, out_quant,
                         activation=str(rng.choice(_ACTIVATIONS)),
                         other_first=bool(rng.random() < 0.5))
    if op == "AVERAGE_POOL_2D":
        padding = str(rng.choice(["SAME", "VALID"]))
        limit = (shape[1], shape[2]) if padding == "VALID" else (5, 5)
        filter_hw = (int(rng.integers(1, limit[0] + 1)), int(rng.integers(1, limit[1] + 1)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        out_quant = _random_quant(rng, quant[0]) if rng.random() < 0.15 else quant
        return average_pool_model(shape, filter_hw, stride, padding, quant, out_quant,
                                  activation=str(rng.choice(_ACTIVATIONS)))
    if op == "MEAN":
        axes = [[1, 2], [1, 2], [2, 1], [1], [2], [3], [-1], [1, 2, 3], [0, 1, 2], [1, -2, 2]][
            int(rng.integers(0, 10))]
        out_quant = quant if rng.random() < 0.3 else _random_quant(rng, quant[0])
        return mean_model(shape, axes, bool(rng.random() < 0.5), quant, out_quant)
    if op == "FULLY_CONNECTED":
        return _random_fully_connected(rng, shape, quant)
    if op == "RESHAPE":
        size = int(np.prod(shape))
        new_shape = [(1, size), (1, 1, 1, size), (size,), (shape[1], shape[2] * shape[3])][
            int(rng.integers(0, 4))]
        return reshape_model(shape, new_shape, quant)
    if op == "QUANTIZE":
        out_quant = (float(np.float32(quant[0] * _log_uniform(rng, 2.0**-6, 2.0**6))),
                     int(rng.integers(-128, 128)))
        return quantize_model(shape, quant, out_quant)
    if op == "MUL":
        return _random_mul(rng, shape, quant)
    if op in UNARY_MODEL_OPS:
        return _random_unary(rng, op, shape, quant)
    raise ValueError(f"'op' must be one of {', '.join(RANDOM_OPS)}, not {op!r}")


def _random_mul(rng, shape, quant) -> bytes:
    """MUL of the input and a second operand: ``[1, 1, 1, C]`` (squeeze-and-excitation's
    channel scale) half the time, else the input's shape, ``[C]`` or a random subset of the
    dimensions; constant, or (for 4-D operands, a quarter of the time) computed from the input
    by MEAN / QUANTIZE. Output scale about ``s1 * s2 * 128``, times up to 16 either way."""
    c = shape[3]
    kind = rng.random()
    if kind < 0.5:
        other_shape = (1, 1, 1, c)
    elif kind < 0.75:
        other_shape = shape
    elif kind < 0.85:
        other_shape = (c,)
    else:
        other_shape = tuple(d if rng.random() < 0.5 else 1 for d in shape)
    other_quant = _random_quant(rng)
    out_quant = (float(np.float32(quant[0] * other_quant[0] * 128
                                  * _log_uniform(rng, 1 / 16, 16))),
                 int(rng.integers(-128, 128)))
    computed = len(other_shape) == 4 and rng.random() < 0.25
    constant = None if computed else rng.integers(-128, 128, other_shape).astype(np.int8)
    return mul_model(shape, other_shape, quant, other_quant, out_quant, constant=constant,
                     activation=str(rng.choice(_ACTIVATIONS)),
                     other_first=bool(rng.random() < 0.3))


def _random_unary(rng, op: str, shape, quant) -> bytes:
    """One of ``UNARY_MODEL_OPS``: LOGISTIC's output scale is 1/256 (zero point -128, or
    random a quarter of the time: LiteRT checks only the scale), TANH's 1/128 and 0 (or random
    a quarter of the time), the others' drawn around the input's (HARD_SWISH's above
    ``s_in / 128``, which LiteRT requires); LEAKY_RELU's alpha from typical and odd values
    (negative, above 1, 0)."""
    out_quant = _random_quant(rng, quant[0])
    options = {}
    if op == "LOGISTIC":
        out_quant = (1 / 256, -128 if rng.random() < 0.75 else out_quant[1])
    elif op == "TANH" and rng.random() < 0.75:
        out_quant = (1 / 128, 0)
    elif op == "LEAKY_RELU":
        options["alpha"] = float(rng.choice([0.01, 0.1, 0.2, 0.3, 0.5, 0.0, -0.25, 1.5]))
    return unary_model(op, shape, quant, out_quant, **options)


def _random_fully_connected(rng, shape, quant) -> bytes:
    """FC from a random input layout: ``[1, D]``, ``[1, 1, 1, D]``, or an image whose rows
    (``keep_num_dims``) or whole (``D = H*W*C``) are the FC's input vectors. Weights with a
    zero point are clipped so that ``w - w_zp`` stays in ``-PACKED_WEIGHT_MAX..
    PACKED_WEIGHT_MAX``, what the pointwise array multiplies."""
    layout = int(rng.integers(0, 4))
    in_shape = [(1, shape[3]), (1, 1, 1, shape[3]), shape, shape][layout]
    d = int(np.prod(shape)) if layout == 3 else shape[3]
    units = int(rng.integers(1, 33))
    q = _random_conv(rng, quant[0], (units, d), 0, d, extreme=bool(rng.random() < 0.1))
    w_zp = 0
    scales = q["scales"]
    if rng.random() < 0.5:   # per-tensor weights, sometimes with a zero point
        scales = scales[:1]
        w_zp = int(rng.integers(-20, 21)) if rng.random() < 0.3 else 0
    w = np.clip(q["w"], w_zp - PACKED_WEIGHT_MAX, w_zp + PACKED_WEIGHT_MAX).astype(np.int8)
    bias = q["bias"] if rng.random() < 0.8 else None
    return fully_connected_model(in_shape, w, scales, bias, quant,
                                 (q["out_scale"], q["out_zp"]), w_zp=w_zp,
                                 activation=str(rng.choice(_ACTIVATIONS)),
                                 keep_num_dims=layout == 2 or (layout < 2
                                                               and bool(rng.random() < 0.3)))


# --------------------------------------------------------------------------------------------
# Small random MobileNet-like networks


@dataclass(frozen=True)
class BlockSpec:
    """One MobileNetV2 inverted residual block: 1x1 CONV_2D expanding the channels ``expand``
    times (RELU6; left out when ``expand`` is 1) -> 3x3 DEPTHWISE_CONV_2D with ``stride``
    (RELU6; stride 2 as PAD (1, 1) + VALID, PyTorch's padding) -> 1x1 CONV_2D projecting to
    ``c_out`` channels (no activation) -> ADD of the block input when the stride is 1 and the
    channel counts match."""
    expand: int
    c_out: int
    stride: int

    def __post_init__(self):
        for name in ("expand", "c_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be positive, not {getattr(self, name)}")
        if self.stride not in (1, 2):
            raise ValueError(f"'stride' must be 1 or 2, not {self.stride}")


@dataclass(frozen=True)
class InvertedResidualSpec:
    """One ``block`` alone on an int8 ``[1, h, w, c_in]`` input; ``seed`` draws the weights
    and the quantization."""
    h: int
    w: int
    c_in: int
    block: BlockSpec
    seed: int


@dataclass(frozen=True)
class MobileNetSpec:
    """A small MobileNetV2-like network on an int8 ``[1, h, w, 3]`` image: stem PAD (1, 1) +
    3x3 CONV_2D stride 2 VALID to ``stem_channels`` (RELU6), the ``blocks``, head 1x1 CONV_2D
    to ``head_channels`` (RELU6), a global pool (``pool``: ``"AVERAGE_POOL_2D"`` or
    ``"MEAN"`` over axes (1, 2) with ``keep_dims``), FULLY_CONNECTED to ``classes`` (weights
    per-channel when ``fc_per_channel``), and with ``reshape`` a RESHAPE (to ``[1, C]`` before
    the FC when the pool keeps 4 dimensions, else to ``[1, 1, 1, classes]`` after it)."""
    h: int
    w: int
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int
    pool: str
    keep_dims: bool
    classes: int
    fc_per_channel: bool
    reshape: bool
    seed: int

    def __post_init__(self):
        if self.pool not in ("AVERAGE_POOL_2D", "MEAN"):
            raise ValueError(f"'pool' must be 'AVERAGE_POOL_2D' or 'MEAN', not {self.pool!r}")
        for name in ("h", "w", "stem_channels", "head_channels", "classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be positive, not {getattr(self, name)}")


@dataclass(frozen=True)
class _Activation:
    """A tensor of the network being built: index, shape, quantization, and an estimate of
    ``rms(x - zero_point)`` in integer units that sizes the next layer's output scale."""
    index: int
    shape: tuple[int, ...]
    quant: tuple[float, int]
    rms: float


#: rms(x - zp) of a ReLU'd output relative to the unclipped one (half a normal distribution).
_RELU_RMS = 0.5**0.5


class _Network:
    """Builds a network layer by layer on ``self.x``, the current activation, with random
    per-channel weights and output quantization sized from the estimated activation spread
    (so that values stay spread over int8 however deep the network)."""

    def __init__(self, description: str, shape, rng: np.random.Generator):
        self.rng = rng
        self.mb = ModelBuilder(description)
        quant = _random_input_quant(rng, extreme=False)
        self.x = _Activation(self.mb.add_tensor("input", shape, "int8", *quant), tuple(shape),
                             quant, _INPUT_STD)
        self.mb.inputs = [self.x.index]
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def conv(self, opcode: str, k: int, stride: int, padding: str, activation: str,
             c_out: int | None = None) -> None:
        """A k x k CONV_2D to ``c_out`` channels or DEPTHWISE_CONV_2D (multiplier 1)."""
        _, h, w, c = self.x.shape
        if opcode == "DEPTHWISE_CONV_2D":
            shape, axis, taps, c_out = (1, k, k, c), 3, k * k, c
        else:
            shape, axis, taps = (c_out, k, k, c), 0, k * k * c
        q = self._weights(shape, axis, taps, activation)
        out_hw = (padding_amounts(padding, h, k, stride, 1)[2],
                  padding_amounts(padding, w, k, stride, 1)[2])
        y = _add_conv(self.mb, opcode, self._name(opcode.lower()), self.x.index,
                      self.x.quant[0], q, out_hw, padding=padding, stride_h=stride,
                      stride_w=stride, activation=activation)
        self.x = _Activation(y, (1, *out_hw, c_out), (q["out_scale"], q["out_zp"]),
                             q["out_rms"])

    def _weights(self, shape, axis: int, taps: int, activation: str) -> dict:
        """Weights, bias and output quantization of a conv, as a converter would produce them
        after folding batch norm: per-channel weight scales put each channel's real
        accumulator spread at a random 0.5 to 3; a RELU6 output gets the quantization of
        [0, 6] (scale about 6/255, zero point -128), any other the spread's. ``_add_conv``
        takes the result; ``out_rms`` estimates the output's ``rms(x - zp)``."""
        rng, s_in = self.rng, self.x.quant[0]
        w, _ = _random_weights(rng, shape, shape[axis], axis, False)
        other = tuple(i for i in range(len(shape)) if i != axis)
        acc_q = np.sqrt(taps) * self.x.rms * np.sqrt(np.mean(w.astype(np.float64) ** 2, other))
        acc_q = np.maximum(acc_q, 1.0)
        target = _log_uniform(rng, 0.5, 3.0, shape[axis])
        scales = (target / (acc_q * s_in)).astype(np.float32)
        spread = float(np.mean(target))
        if activation == "RELU6":
            out_scale, out_zp = float(np.float32(6.0 / 255 * _log_uniform(rng, 0.8, 1.25))), -128
        else:
            out_scale, out_zp = _output_quant(rng, spread, extreme=False)
        rms = spread / out_scale * (_RELU_RMS if activation != "NONE" else 1.0)
        return dict(w=w, scales=scales, bias=_random_bias(rng, acc_q, False), out_scale=out_scale,
                    out_zp=out_zp, out_rms=rms)

    def pad(self, before: int, after: int) -> None:
        p = np.array([[0, 0], [before, after], [before, after], [0, 0]])
        name = self._name("pad")
        paddings = self.mb.add_tensor(f"{name}/paddings", p.shape, "int32", data=p)
        shape = tuple(np.asarray(self.x.shape) + p.sum(axis=1))
        y = self.mb.add_tensor(f"{name}/out", shape, "int8", *self.x.quant)
        self.mb.add_operator("PAD", [self.x.index, paddings], [y])
        self.x = _Activation(y, shape, self.x.quant, self.x.rms)

    def add(self, other: _Activation) -> None:
        """``self.x + other``; output scale from the combined spread of the operands."""
        spread = float(np.hypot(self.x.quant[0] * self.x.rms, other.quant[0] * other.rms))
        scale, zp = _output_quant(self.rng, spread, extreme=False)
        y = self.mb.add_tensor(f"{self._name('add')}/out", self.x.shape, "int8", scale, zp)
        self.mb.add_operator("ADD", [other.index, self.x.index], [y])
        self.x = _Activation(y, self.x.shape, (scale, zp), spread / scale)

    def global_pool(self, pool: str, keep_dims: bool) -> None:
        _, h, w, c = self.x.shape
        name = self._name(pool.lower())
        # The mean of ReLU'd values keeps about their mean, ~0.8 of their rms.
        rms = 0.8 * self.x.rms
        if pool == "AVERAGE_POOL_2D":
            quant, shape = self.x.quant, (1, 1, 1, c)
            y = self.mb.add_tensor(f"{name}/out", shape, "int8", *quant)
            self.mb.add_operator(pool, [self.x.index], [y], padding="VALID", stride_h=1,
                                 stride_w=1, filter_h=h, filter_w=w)
        else:
            quant = self.x.quant
            if self.rng.random() < 0.5:
                quant = _output_quant(self.rng, rms * quant[0], extreme=False)
            shape = (1, 1, 1, c) if keep_dims else (1, c)
            axes = self.mb.add_tensor(f"{name}/axes", (2,), "int32", data=np.array([1, 2]))
            y = self.mb.add_tensor(f"{name}/out", shape, "int8", *quant)
            self.mb.add_operator(pool, [self.x.index, axes], [y], keep_dims=keep_dims)
        self.x = _Activation(y, shape, quant, rms * self.x.quant[0] / quant[0])

    def reshape(self, shape) -> None:
        name = self._name("reshape")
        s = self.mb.add_tensor(f"{name}/shape", (len(shape),), "int32", data=np.asarray(shape))
        y = self.mb.add_tensor(f"{name}/out", shape, "int8", *self.x.quant)
        self.mb.add_operator("RESHAPE", [self.x.index, s], [y], new_shape=list(shape))
        self.x = _Activation(y, tuple(shape), self.x.quant, self.x.rms)

    def fully_connected(self, units: int, per_channel: bool) -> None:
        d = self.x.shape[-1]
        q = _random_conv(self.rng, self.x.quant[0], (units, d), 0, d, False, self.x.rms)
        scales = q["scales"] if per_channel else q["scales"][:1]
        name = self._name("fully_connected")
        w = self.mb.add_tensor(f"{name}/weights", q["w"].shape, "int8", scales, 0, 0, q["w"])
        b = self.mb.add_tensor(f"{name}/bias", (units,), "int32",
                               self.x.quant[0] * scales.astype(np.float64), 0, 0, q["bias"])
        shape = (int(np.prod(self.x.shape)) // d, units)
        y = self.mb.add_tensor(f"{name}/out", shape, "int8", q["out_scale"], q["out_zp"])
        self.mb.add_operator("FULLY_CONNECTED", [self.x.index, w, b], [y])
        self.x = _Activation(y, shape, (q["out_scale"], q["out_zp"]), q["out_rms"])

    def inverted_residual(self, block: BlockSpec) -> None:
        block_input = self.x
        c_in = self.x.shape[3]
        if block.expand > 1:
            self.conv("CONV_2D", 1, 1, "VALID", "RELU6", c_in * block.expand)
        if block.stride == 2:
            self.pad(1, 1)
            self.conv("DEPTHWISE_CONV_2D", 3, 2, "VALID", "RELU6")
        else:
            self.conv("DEPTHWISE_CONV_2D", 3, 1, "SAME", "RELU6")
        self.conv("CONV_2D", 1, 1, "VALID", "NONE", block.c_out)
        if block.stride == 1 and block.c_out == c_in:
            self.add(block_input)

    def finish(self) -> bytes:
        self.mb.outputs = [self.x.index]
        return self.mb.finish()


def inverted_residual_model(spec: InvertedResidualSpec) -> bytes:
    """One inverted residual block (``BlockSpec``) on int8 ``[1, h, w, c_in]``."""
    net = _Network(f"inverted residual {spec}", (1, spec.h, spec.w, spec.c_in),
                   np.random.default_rng(spec.seed))
    net.inverted_residual(spec.block)
    return net.finish()


def mobilenet_like_model(spec: MobileNetSpec) -> bytes:
    """The network ``spec`` describes, weights and quantization drawn from ``spec.seed``."""
    net = _Network(f"mobilenet-like {spec}", (1, spec.h, spec.w, 3),
                   np.random.default_rng(spec.seed))
    net.pad(1, 1)
    net.conv("CONV_2D", 3, 2, "VALID", "RELU6", spec.stem_channels)
    for block in spec.blocks:
        net.inverted_residual(block)
    net.conv("CONV_2D", 1, 1, "VALID", "RELU6", spec.head_channels)
    net.global_pool(spec.pool, spec.keep_dims)
    four_d = len(net.x.shape) == 4
    if spec.reshape and four_d:
        net.reshape((1, spec.head_channels))
    net.fully_connected(spec.classes, spec.fc_per_channel)
    if spec.reshape and not four_d:
        net.reshape((1, 1, 1, spec.classes))
    return net.finish()


def random_mobilenet_spec(rng: np.random.Generator, *, max_hw: int = 32, max_blocks: int = 6,
                          max_channels: int = 24, max_expand: int = 6) -> MobileNetSpec:
    """A random ``MobileNetSpec``: input up to ``max_hw`` square-ish, 1..``max_blocks`` blocks
    (expansion 1..``max_expand``; stride 1 blocks keep the channel count half the time, giving
    a residual ADD), channels up to ``max_channels``."""
    blocks = []
    c = int(rng.integers(2, max_channels + 1))
    stem = c
    for _ in range(int(rng.integers(1, max_blocks + 1))):
        stride = int(rng.choice([1, 2], p=[0.7, 0.3]))
        c_out = c if stride == 1 and rng.random() < 0.5 else int(rng.integers(2, max_channels + 1))
        blocks.append(BlockSpec(expand=int(rng.integers(1, max_expand + 1)), c_out=c_out,
                                stride=stride))
        c = c_out
    return MobileNetSpec(
        h=int(rng.integers(3, max_hw + 1)), w=int(rng.integers(3, max_hw + 1)),
        stem_channels=stem, blocks=tuple(blocks),
        head_channels=int(rng.integers(4, 2 * max_channels + 1)),
        pool=str(rng.choice(["AVERAGE_POOL_2D", "MEAN"])), keep_dims=bool(rng.random() < 0.5),
        classes=int(rng.integers(2, 17)), fc_per_channel=bool(rng.random() < 0.5),
        reshape=bool(rng.random() < 0.5), seed=int(rng.integers(0, 2**31)))
