"""The host's graph IR: what the TFLite importer produces and the compiler consumes.

Deliberately small: tensors with TFLite quantization, operators with their builtin options
turned into plain Python values. Activations are NHWC, batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Tensor", "Operator", "Graph", "UnsupportedModelError"]


class UnsupportedModelError(ValueError):
    """The model uses an op, dtype or parameter dwsep does not support. The message names
    the op, the value and what is allowed."""


@dataclass
class Tensor:
    """A tensor of the graph.

    ``scale`` and ``zero_point`` are 1-D arrays: one entry for per-tensor quantization, one
    per slice of ``quantized_dimension`` for per-channel. ``data`` holds constants (weights,
    biases) and is ``None`` for activations.
    """
    name: str
    shape: tuple[int, ...]
    dtype: str  #: "int8", "int32", "float32", ...
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    zero_point: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    quantized_dimension: int = 0
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def per_tensor_scale(self) -> float:
        if self.scale.size != 1:
            raise UnsupportedModelError(
                f"tensor {self.name!r} must be per-tensor quantized, has {self.scale.size} "
                "scales")
        return float(self.scale[0])

    @property
    def per_tensor_zero_point(self) -> int:
        if self.zero_point.size != 1:
            raise UnsupportedModelError(
                f"tensor {self.name!r} must be per-tensor quantized, has "
                f"{self.zero_point.size} zero points")
        return int(self.zero_point[0])


@dataclass
class Operator:
    """One operator. ``opcode`` is the TFLite builtin name (e.g. ``"DEPTHWISE_CONV_2D"``);
    ``inputs``/``outputs`` are tensor names (``None`` for an absent optional input);
    ``options`` holds the builtin options as plain values, e.g. ``stride_h``, ``stride_w``,
    ``dilation_h``, ``dilation_w``, ``padding`` (``"SAME"``/``"VALID"``),
    ``activation`` (``"NONE"``, ``"RELU"``, ``"RELU6"``, ...), ``depth_multiplier``."""
    opcode: str
    inputs: list[str | None]
    outputs: list[str]
    options: dict = field(default_factory=dict)
    index: int = 0  #: position in the model's operator list (for messages)


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    operators: list[Operator]
    inputs: list[str]
    outputs: list[str]

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    @property
    def input(self) -> Tensor:
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> Tensor:
        return self.tensors[self.outputs[0]]
