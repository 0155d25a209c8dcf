"""Pass 3, emission: :func:`emit_descriptors` turns each unit into its descriptors (one per
input slice and output tile) as :class:`Job`\\ s, whose address fields name regions (a blob,
an activation buffer) rather than addresses; packs the weights and requant tables (each
distinct blob once); and writes the per-layer report and the host steps. Before a unit is
emitted, its tables pass :func:`.checks.check_requant_inputs` and
:func:`.checks.check_packed_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import AcceleratorConfig
from ...hw.layout import DescFlag, Opcode, expand_words
from .. import packing
from ..graph import Graph
from .checks import check_packed_weights, check_requant_inputs, fail
from .match import Matched
from .program import HostStep, TensorInfo, pixel_count, tensor_info
from .tile import Sliced, output_tiles
from .units import Unit, engine_words


@dataclass
class Job:
    """One descriptor before the DDR plan: address fields hold ``(region key, byte offset)``."""
    fields: dict
    refs: dict[str, tuple[object, int]]
    reads: list[object]
    writes: list[object]


def _pad_to(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` (a vector, or weights by output channel along axis 0) with zeros up to ``n``
    entries along its first axis."""
    a = np.asarray(a)
    return np.pad(a, [(0, n - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def _check_requantizers(u: Unit) -> None:
    """Every requant table of ``u`` (the expand, DW and PW tables ``emit_unit`` writes, which
    slice, tile and lane-order these channels) passes :func:`check_requant_inputs`, each
    channel with the weights its array stage sums: an expand row (the input channels), a
    DW channel's ``k*k`` taps (a streamed pool's: its one tap over every pixel, summed in
    the requantizer: the tap times the pixels), a PW row (the mid channels; ``k*k*C_in`` in
    ``CONV`` mode)."""
    stages = []
    if u.expand is not None:
        stages.append(("expand", u.expand, u.expand.w))
    if u.dw is not None:
        taps = u.dw.w.reshape(-1, u.dw.w.shape[-1]).T.astype(np.int64)
        stages.append(("depthwise", u.dw, taps * max(1, u.pool_pixels)))
    if u.fc is None:
        stages.append(("pointwise", u.pw, u.pw.w.reshape(u.pw.w.shape[0], -1)))
    for what, stage, taps in stages:
        try:
            check_requant_inputs(taps, stage.bias, stage.mult, stage.shift, what)
        except ValueError as e:
            raise fail(stage.op, str(e)) from None


def _check_packed_weights(u: Unit) -> None:
    """Every weight ``u`` gives the expand and pointwise arrays passes
    :func:`check_packed_weights`: the expand's, the PW's (a 1x1 CONV_2D, the taps of a
    ``CONV``-mode k x k CONV_2D, the identity and pool matrices the compiler makes) and a
    FULLY_CONNECTED's ``w - w_zp``."""
    stages = [("expand", u.expand)] if u.expand is not None else []
    stages.append(("fully connected" if u.fc is not None else "pointwise", u.pw))
    for what, stage in stages:
        try:
            check_packed_weights(stage.w, what, stage.w_zp)
        except ValueError as e:
            raise fail(stage.op, str(e)) from None


class _Emitter:
    """The state of one :func:`emit_descriptors`: the blobs and buffers so far."""

    def __init__(self, graph: Graph, cfg: AcceleratorConfig, sliced: Sliced,
                 model_input: TensorInfo):
        self.graph, self.cfg, self.units = graph, cfg, sliced.units
        self.model_input = model_input
        self.blobs: dict[bytes, str] = {}      # content -> key
        self.blob_order: list[tuple[str, bytes]] = []
        self.buffers: dict[object, int] = {}  # key -> bytes
        self.parts = sliced.parts             # tensors stored in slices
        self.jobs: list[Job] = []
        self.host_steps: list[HostStep] = []

    def blob(self, name: str, data: bytes) -> str:
        """The key of constant ``data`` (stored once however often it is used)."""
        if data not in self.blobs:
            self.blobs[data] = name
            self.blob_order.append((name, data))
        return self.blobs[data]

    def tensor_bytes(self, name: str, c0: int = 0, c1: int | None = None) -> int:
        if name == self.model_input.name:
            return self.model_input.nbytes
        t = self.graph.tensor(name)
        c1 = int(t.shape[-1]) if c1 is None else c1
        return pixel_count(t.shape) * packing.padded(c1 - c0, self.cfg.dw_lanes)

    def buffer(self, name: str, part: int | None = None) -> object:
        """The region key of stored tensor ``name`` (or of its slice ``part``); a constant
        tensor is a blob."""
        t = self.graph.tensor(name)
        if t.is_constant:
            x = np.asarray(t.data, np.int8)
            return self.blob(f"const.{name}", packing.pack_activations(
                x.reshape(1, pixel_count(x.shape), x.shape[-1]), self.cfg.dw_lanes))
        key = ("act", name) if part is None else ("act", name, part)
        if key not in self.buffers:
            if part is None:
                self.buffers[key] = self.tensor_bytes(name)
            else:
                self.buffers[key] = self.tensor_bytes(name, *self.parts[name][part])
        return key

    def emit(self) -> list[dict]:
        reports = []
        for n, u in enumerate(self.units):
            first = len(self.jobs)
            tiles = self.emit_unit(n, u)
            reports.append(self.report(n, u, first, len(self.jobs) - first, tiles))
        return reports

    def emit_unit(self, n: int, u: Unit) -> int:
        P, Q = self.cfg.dw_lanes, self.cfg.pw_cols
        geo, m = u.geo, u.depth_mult
        slices = u.slices or [(0, geo.c)]
        _check_packed_weights(u)
        _check_requantizers(u)
        partials = []
        tiles_per_slice = 0
        for s, (c0, c1) in enumerate(slices):
            c = c1 - c0
            g_in = packing.padded(c if u.slices else u.in_c, P) // P
            g_e, mid_groups, exp_words = engine_words(self.cfg, u, g_in)
            if u.slices is None:
                in_ref = (self.buffer(u.input), 0)
            elif u.input in self.parts:
                in_ref = (self.buffer(u.input, s), 0)
            else:       # a one-pixel input: the slice's channels where they lie
                in_ref = (self.buffer(u.input), c0)
            fields = dict(
                opcode=Opcode.LAYER, flags=0, kernel=geo.k, stride=geo.stride,
                dilation=geo.dilation, depth_mult=m, pad_top=geo.pad_top,
                pad_left=geo.pad_left, in_h=geo.h, in_w=geo.w, in_groups=g_in,
                out_h=geo.out_h, out_w=geo.out_w, lb_zp=geo.lb_zp,
                **dict.fromkeys(("exp_zp", "exp_min", "exp_max", "dw_zp", "dw_min", "dw_max",
                                 "pw_zp", "pw_min", "pw_max", "add_zp", "add_min", "add_max",
                                 "add_out_shift"), 0))
            refs = {"in_addr": in_ref}
            flags = 0
            tag = f"layer{n}" + (f".slice{s}" if u.slices else "")
            if u.expand is not None:
                e = u.expand
                flags |= DescFlag.EXPAND
                refs["exp_weights"] = (self.blob(f"{tag}.exp_weights",
                                                 packing.pack_expand_weights(e.w, P, Q)), 0)
                refs["exp_table"] = (self.blob(f"{tag}.exp_table", packing.pack_table(
                    *(_pad_to(a, expand_words(self.cfg, g_e) * Q)
                      for a in (e.bias, e.mult, e.shift)), self.cfg.erq_lanes)), 0)
                fields.update(exp_zp=e.zp, exp_min=e.lo, exp_max=e.hi)
            if u.conv:
                flags |= DescFlag.CONV
            else:
                if u.pool_pixels:
                    flags |= DescFlag.POOL
                d = u.dw
                w = d.w[..., c0 * m:c1 * m]
                refs["dw_weights"] = (self.blob(f"{tag}.dw_weights", packing.pack_dw_weights(
                    w, m, P, self.cfg.dw_taps)), 0)
                refs["dw_table"] = (self.blob(f"{tag}.dw_table", packing.pack_table(
                    *(packing.to_mid_lanes(a[c0 * m:c1 * m], c, m, P)
                      for a in (d.bias, d.mult, d.shift)), self.cfg.requant_lanes)), 0)
                fields.update(dw_zp=d.zp, dw_min=d.lo, dw_max=d.hi)
            # PW: the slice's columns, one descriptor per output tile
            if u.fc is not None:
                pw_w = u.pw.w[:, c0:c1]
                c_out = pw_w.shape[0]
                flags |= DescFlag.RAW_OUT
                key = ("raw", n, s)
                pixels = geo.out_h * geo.out_w
                self.buffers[key] = 4 * pixels * packing.padded(c_out, Q)
                partials.append(key)
                out_parts, out_base = None, 0
            elif u.slices is not None:      # a pool on one slice: identity PW of its channels
                pw_w = u.pw.w[c0:c1, c0:c1]
                c_out = c
                out_parts, out_base = [(0, c)], c0
            else:
                pw_w = u.pw.w
                c_out = pw_w.shape[0]
                out_parts = self.parts.get(u.output)
                out_base = 0
            if u.residual is not None:
                flags |= DescFlag.RESIDUAL
                add = dict(u.add)
                refs["add_table"] = (self.blob(f"{tag}.add_table", add.pop("table")), 0)
                fields.update(add)
                refs["res_addr"] = (self.buffer(u.residual), 0)
            if u.fc is None:
                fields.update(pw_zp=u.pw.zp, pw_min=u.pw.lo, pw_max=u.pw.hi)
            tiles = output_tiles(self.cfg, u, c_out, out_parts, mid_groups, exp_words)
            tiles_per_slice = len(tiles)
            conv_w = u.stem.w if u.stem is not None else pw_w
            for t, (a, b) in enumerate(tiles):
                # the channels stored (the engine's last word beyond them is dropped)
                parted = out_parts is not None and u.slices is None
                if u.fc is not None or (b < c_out and not parted):
                    end = b                                 # to the next tile; RAW_OUT
                elif parted:
                    end = a + packing.padded(b - a, P)      # a part: a tensor of its own
                else:
                    end = packing.padded(c_out, P)          # to the tensor's padding
                # the engine words of the tile's channels: the stored ones past the last
                # word (the padding to P) are filler beats
                og = packing.padded(b - a, Q) // Q
                packed = (packing.pack_conv_weights(_pad_to(conv_w[a:b], og * Q), P, Q)
                          if u.conv else packing.pack_pw_weights(_pad_to(pw_w[a:b], og * Q),
                                                                 m, P, Q))
                r = dict(refs)
                r["pw_weights"] = (self.blob(f"{tag}.pw_weights{t}", packed), 0)
                if u.fc is None:
                    r["pw_table"] = (self.blob(f"{tag}.pw_table{t}", packing.pack_table(
                        *(_pad_to(arr[a:b], og * Q) for arr in
                          (u.pw.bias, u.pw.mult, u.pw.shift)), self.cfg.erq_lanes)), 0)
                    beats = (end - a) // 8
                    if parted:
                        r["out_addr"] = (self.buffer(u.output, t), 0)
                        pitch = beats
                    else:
                        full = packing.padded(self.graph.tensor(u.output).shape[-1], P)
                        r["out_addr"] = (self.buffer(u.output), out_base + a)
                        pitch = full // 8
                else:
                    r["out_addr"] = (key, 4 * a)
                    pitch = 4 * packing.padded(c_out, Q) // 8
                    beats = og * Q // 2
                f = dict(fields, flags=flags, exp_groups=g_e, mid_groups=mid_groups,
                         out_groups=og, out_pitch=pitch, out_beats=beats,
                         exp_words=expand_words(self.cfg, g_e) if u.expand is not None
                         else g_e)
                reads = [r["in_addr"][0]] + ([r["res_addr"][0]] if "res_addr" in r else [])
                self.jobs.append(Job(f, r, reads, [r["out_addr"][0]]))
        if u.fc is not None:
            params = dict(u.fc, partials=partials, cols=self.cfg.pw_cols)
            self.host_steps.append(HostStep("fc_requant", u.output, n, params))
        return tiles_per_slice

    def report(self, n: int, u: Unit, first: int, count: int, tiles: int) -> dict:
        """The layer as the model states it (a stem compiled by space-to-depth: its
        operator's geometry, the descriptor's in ``note``)."""
        geo = u.geo if u.stem is None else u.stem.op_geo
        in_c = u.in_c if u.stem is None else geo.c
        return {
            "layer": n, "operators": [op.index for op in u.ops],
            "ops": [op.opcode for op in u.ops], "stages": u.stages,
            "descriptors": [first, count], "runs_on": "accelerator" if u.fc is None
            else "accelerator + host", "host_step": "fc_requant" if u.fc is not None else None,
            "input": u.input, "output": u.output, "input_shape": [geo.h, geo.w, in_c],
            "output_shape": list(u.out_shape), "kernel": geo.k, "stride": geo.stride,
            "dilation": geo.dilation, "depth_multiplier": u.depth_mult,
            "pad_top": geo.pad_top, "pad_left": geo.pad_left,
            "mid_channels": (u.expand.w.shape[0] if u.expand is not None else geo.c)
            * u.depth_mult, "tiles": tiles, "input_slices": len(u.slices or [0]),
            "macs": int(u.macs), "note": u.note,
        }


@dataclass(frozen=True)
class Emitted:
    """What :func:`emit_descriptors` made.

    Attributes
    ----------
    jobs:
        The descriptors in order, the last flagged ``LAST``; the engine-weight fields not
        yet set (:func:`.plan.plan_engine_weights`).
    layers:
        The per-layer report (:attr:`.program.Program.layers`).
    blobs:
        ``(key, bytes)`` of every distinct weight, table and constant tensor, in order of
        first use.
    buffers:
        The activation regions (a tensor, a slice of one, an FC's partial sums) -> bytes.
    host_steps:
        The ``fc_requant`` steps, ``params["partials"]`` the regions' keys.
    input:
        The model input as stored (``offset`` not yet known).
    output:
        The tensor holding the model output.
    input_key, output_key:
        The regions of the model input and output (``output_key`` ``None`` when the host
        computes the output).
    """
    jobs: list[Job]
    layers: list[dict]
    blobs: list[tuple[str, bytes]]
    buffers: dict[object, int]
    host_steps: list[HostStep]
    input: TensorInfo
    output: str
    input_key: object
    output_key: object | None


def emit_descriptors(graph: Graph, cfg: AcceleratorConfig, matched: Matched,
                     sliced: Sliced) -> Emitted:
    """The descriptors, blobs, buffers and reports of ``sliced.units`` (matched in
    ``matched``)."""
    model_input = tensor_info(graph, graph.inputs[0], graph.inputs[0], cfg.dw_lanes, None,
                              matched.input_block)
    emitter = _Emitter(graph, cfg, sliced, model_input)
    layers = emitter.emit()
    emitter.jobs[-1].fields["flags"] |= DescFlag.LAST
    input_key = emitter.buffer(graph.inputs[0])
    output_key = None if matched.output in matched.host else emitter.buffer(matched.output)
    return Emitted(emitter.jobs, layers, emitter.blob_order, emitter.buffers,
                   emitter.host_steps, model_input, matched.output, input_key, output_key)
