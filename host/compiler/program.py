"""The compiled program: :class:`Program` (descriptor fields, packed blobs, the DDR plan, the
layer report), the model input and output as they sit in DDR (:class:`TensorInfo`) and the
work the driver does on the CPU (:class:`HostStep`). The last pass, :func:`.plan.plan_memory`,
makes it; nothing in this module depends on how.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...hw.config import AcceleratorConfig
from ...hw.layout import ADDRESS_FIELDS, DESCRIPTOR
from .. import packing
from ..graph import Graph
from ..numerics import INT32_MIN, wrap_int32
from ..reference import round_half_away

#: alignment of every region of the DDR image (and of the base address), bytes
ALIGN = 64


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def pixel_count(shape) -> int:
    return int(np.prod(shape[:-1], dtype=np.int64))


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as it sits in DDR.

    ``shape`` is the model's (batch 1) and ``channels`` its last dimension. With
    ``space_to_depth == 1`` the buffer at ``offset`` holds ``int8[pixels][padded_channels]``
    with ``pixels`` the product of all but the last dimension (see
    :func:`packing.pack_activations`). A model input whose stem is compiled by space-to-depth
    (:func:`space_to_depth_conv`) has ``space_to_depth == b`` (2): the buffer holds the
    ``[ceil(H/b), ceil(W/b), b*b*C]`` tensor of :func:`packing.space_to_depth` (the zero
    point past an odd edge), its channels padded to ``padded_channels``. ``offset`` is
    ``None`` for an output the host computes (:attr:`Program.output_step`).
    """
    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    channels: int
    padded_channels: int
    lanes: int
    offset: int | None
    space_to_depth: int = 1

    @property
    def pixels(self) -> int:
        return pixel_count(self.shape)

    @property
    def stored_shape(self) -> tuple[int, int]:
        """``(pixels, channels)`` of the tensor in DDR, before the channel padding."""
        b = self.space_to_depth
        if b == 1:
            return self.pixels, self.channels
        h, w = self.shape[-3:-1]
        return -(-h // b) * -(-w // b), b * b * self.channels

    @property
    def nbytes(self) -> int:
        return self.stored_shape[0] * self.padded_channels

    def pack(self, x: np.ndarray) -> bytes:
        """An int8 array of the tensor's size (any shape ending in the channels) -> bytes."""
        x = np.asarray(x)
        b = self.space_to_depth
        if b > 1:
            x = packing.space_to_depth(x.reshape(*self.shape[-3:]), b, self.zero_point)
        return packing.pack_activations(x.reshape(1, *self.stored_shape), self.lanes)

    def unpack(self, raw: bytes) -> np.ndarray:
        """The buffer's bytes -> int8 array of :attr:`shape`."""
        a = packing.unpack_activations(raw, 1, *self.stored_shape, self.lanes)
        b = self.space_to_depth
        if b > 1:
            h, w = self.shape[-3:-1]
            a = packing.depth_to_space(a.reshape(-(-h // b), -(-w // b), -1), b, h, w)
        return a.reshape(self.shape)


@dataclass(frozen=True)
class Blob:
    """Constant bytes at ``offset`` of the DDR image."""
    name: str
    offset: int
    data: bytes


@dataclass(frozen=True, eq=False)
class HostStep:
    """Work the driver does on the CPU after the hardware run: the documented exceptions to
    "everything runs on the accelerator" (README table). One kind exists:

    ``fc_requant`` computes ``tensor``, a ``FULLY_CONNECTED`` output, from the int32
    ``RAW_OUT`` partial sums the hardware wrote: ``params["partials"]`` lists their DDR
    offsets (relative to the image base), each ``int32[rows][pitch]``; with ``bias`` the FC
    bias folded with ``-in_zp * sum(w)``, ``scale[o] = s_in * s_w[o] / s_out`` (float64)::

        acc = wrap32(sum of the partials + bias)
        y   = clamp(wrap32(int32(round(double(acc) * scale)) + out_zp), act_min, act_max)

    (``round`` half away from zero, out-of-range doubles give INT32_MIN), which is LiteRT's
    ``reference_integer_ops::FullyConnected`` requantization (``reference.fully_connected``).
    """
    kind: str
    tensor: str
    layer: int
    params: dict

    def apply(self, read: Callable[[int, int], bytes]) -> np.ndarray:
        """Run the step; ``read(offset, nbytes)`` reads the DDR image. Returns
        ``int8[rows, units]``."""
        if self.kind != "fc_requant":
            raise ValueError(f"unknown host step {self.kind!r}")
        p = self.params
        rows, units, cols = p["rows"], p["units"], p["cols"]
        acc = np.zeros((rows, units), np.int64)
        for offset in p["partials"]:
            raw = read(offset, 4 * rows * packing.padded(units, cols))
            acc += packing.unpack_raw(raw, rows, units, cols)
        acc = wrap_int32(acc + p["bias"])
        scaled = round_half_away(acc.astype(np.float64) * p["scale"])
        fits = (scaled >= INT32_MIN) & (scaled < 2.0**31)
        out = wrap_int32(np.where(fits, scaled, INT32_MIN).astype(np.int64) + p["out_zp"])
        return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


@dataclass
class Program:
    """A compiled model.

    ``descriptors`` are the descriptor field values with the :data:`ADDRESS_FIELDS` relative
    to the image base; :meth:`link` makes the DDR image for a given base address.
    ``layers`` is the per-layer report (plain dicts, JSON-ready; ``layers[i]["descriptors"]``
    is the ``[first, count]`` range of its descriptors); ``host_steps`` run after the
    hardware, and ``output_step`` (one of them, or ``None``) computes the model output.
    """
    config: AcceleratorConfig
    descriptors: list[dict[str, int]]
    blobs: list[Blob]
    input: TensorInfo
    output: TensorInfo
    size: int
    layers: list[dict] = field(default_factory=list)
    host_steps: list[HostStep] = field(default_factory=list)
    output_step: HostStep | None = None

    def descriptor_bytes(self, base: int) -> list[bytes]:
        """The descriptors packed with absolute addresses ``base + offset``."""
        return [DESCRIPTOR.pack(**{k: v + base if k in ADDRESS_FIELDS else v
                                   for k, v in d.items()}) for d in self.descriptors]

    def link(self, base: int) -> bytes:
        """The whole DDR image (``size`` bytes) for a region at physical address ``base``:
        descriptors at ``base`` (the value for ``PROGRAM.addr``), blobs, and zeroed
        activation buffers."""
        if base % ALIGN:
            raise ValueError(f"base address {base:#x} is not {ALIGN}-byte aligned")
        limit = 1 << min(32, self.config.axi_addr_width)
        if not 0 <= base <= limit - self.size:
            raise ValueError(f"image of {self.size} bytes at {base:#x} does not fit the "
                             f"{min(32, self.config.axi_addr_width)}-bit address space")
        image = bytearray(self.size)
        for i, raw in enumerate(self.descriptor_bytes(base)):
            image[i * DESCRIPTOR.size:(i + 1) * DESCRIPTOR.size] = raw
        for blob in self.blobs:
            image[blob.offset:blob.offset + len(blob.data)] = blob.data
        return bytes(image)

    def read_output(self, read: Callable[[int, int], bytes]) -> np.ndarray:
        """The model output (int8, :attr:`output` ``.shape``) after a run: from its DDR buffer,
        or computed by :attr:`output_step`; ``read(offset, nbytes)`` reads the image."""
        if self.output_step is not None:
            return self.output_step.apply(read).reshape(self.output.shape)
        return self.output.unpack(read(self.output.offset, self.output.nbytes))

    def layer_of_descriptor(self, index: int) -> dict:
        """The ``layers`` entry descriptor ``index`` belongs to."""
        for r in self.layers:
            first, count = r["descriptors"]
            if first <= index < first + count:
                return r
        raise IndexError(f"no descriptor {index} in a program of {len(self.descriptors)}")

    @property
    def macs(self) -> int:
        return sum(layer["macs"] for layer in self.layers)

    def summary(self) -> str:
        """Human-readable per-layer report."""
        lines = [f"config {self.config.name!r}: {len(self.layers)} layer(s), "
                 f"{len(self.descriptors)} descriptor(s), {self.macs} MACs, DDR image "
                 f"{self.size} bytes"]
        for r in self.layers:
            first, count = r["descriptors"]
            span = f"{first}" if count == 1 else f"{first}-{first + count - 1}"
            h, w, c = r["input_shape"]
            extra = []
            if r["tiles"] > 1:
                extra.append(f"{r['tiles']} output tiles")
            if r["input_slices"] > 1:
                extra.append(f"{r['input_slices']} input slices")
            if r["host_step"]:
                extra.append(f"then {r['host_step']} on the host")
            if r["note"]:
                extra.append(r["note"])
            lines.append(
                f"  layer {r['layer']} [descriptor {span}] operators "
                f"{','.join(map(str, r['operators']))} {'+'.join(r['ops'])} -> "
                f"{'+'.join(r['stages'])}: {h}x{w}x{c} -> "
                f"{'x'.join(map(str, r['output_shape']))}, k{r['kernel']} s{r['stride']} "
                f"d{r['dilation']} m{r['depth_multiplier']}, {r['macs']} MACs"
                + "".join(f"; {e}" for e in extra))
        return "\n".join(lines)


def tensor_info(graph: Graph, name: str, shape_of: str, lanes: int,
                offset: int | None, block: int = 1) -> TensorInfo:
    """The :class:`TensorInfo` of ``graph``'s tensor ``name`` (its quantization) with the
    shape of ``shape_of`` (the model output past no-op RESHAPEs has the RESHAPE's)."""
    t, s = graph.tensor(name), graph.tensor(shape_of)
    c = int(s.shape[-1])
    return TensorInfo(shape_of, tuple(int(v) for v in s.shape), float(t.scale[0]),
                      int(t.zero_point[0]), c, packing.padded(block * block * c, lanes), lanes,
                      offset, block)
