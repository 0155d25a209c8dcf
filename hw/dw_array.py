"""Depthwise PE array: ``P`` lanes of ``T`` int8 multiply-accumulates, a tap column per cycle."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .booth import booth_digits
from .config import AcceleratorConfig
from .line_buffer import tap_layout
from .ports import WritePortSignature
from .requant import acc_layout

__all__ = ["DepthwiseArray", "dw_weight_layout", "lut_multiply", "dw_acc_bits"]


def _addr_bits(depth: int) -> int:
    """Bits of an address into ``depth`` words (at least 1)."""
    return max(1, (depth - 1).bit_length())


def dw_weight_layout(config: AcceleratorConfig) -> data.ArrayLayout:
    """One DW weight word: ``int8[T][P]``, row ``t`` the weights of kernel row ``r*T + t``
    (``T = dw_taps``), byte ``t*P + i``."""
    return data.ArrayLayout(data.ArrayLayout(signed(8), config.dw_lanes), config.dw_taps)


def dw_acc_bits(config: AcceleratorConfig) -> int:
    """Width of the DW array's signed accumulators: a ``k_max x k_max`` window's sum of int8
    x int8 products, at most ``k_max**2 * 128 * 128`` in magnitude (21 bits for k_max 7)."""
    return (config.k_max ** 2 * 128 * 128).bit_length() + 1


def lut_multiply(a: Value, b: Value) -> Value:
    """``a * b`` of two signed 8-bit values in LUTs (radix-4 Booth: four partial products of
    ``0, +-a, +-2a``), so synthesis does not put it on a DSP48E1; 16-bit signed result."""
    terms = []
    for k, (term, neg) in enumerate(booth_digits(a, b)):
        terms += [term, neg << (2 * k)]   # the negation's +1 as a term of its own
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total[:16].as_signed()


class DepthwiseArray(wiring.Component):
    """Depthwise multiply-accumulate over the tap columns of each pixel-group.

    For every column, lane ``i`` computes ``acc[i] = (first ? 0 : acc[i]) + sum_t
    data[t][i] * w[waddr][t][i]`` (``T`` int8 x int8 products in LUTs, accumulated in
    :func:`dw_acc_bits` bits, which hold any ``k_max x k_max`` window's sum); the column
    with ``last`` emits ``{acc, group}``. Pipeline: accept the column and read the weight
    memory (block RAM, registered read) -> products -> their
    sum -> accumulate into the output register, with the weight word registered once more
    at the block RAM's output. The whole pipeline stalls while ``o`` holds
    a word that is not taken (global stall: ``taps.ready`` follows ``o.ready``
    combinationally), so nothing is lost or duplicated under any valid/ready pattern, and
    one column per cycle flows while ``o`` is ready.

    Parameters
    ----------
    config : AcceleratorConfig
        ``P = config.dw_lanes`` lanes of ``T = config.dw_taps`` products; the weight memory
        has ``config.dw_weight_depth`` words.

    Members
    -------
    taps : ``In(stream.Signature(hw.line_buffer.tap_layout(config)))``
        Tap columns in pixel-group order, ``first`` on the first column and ``last`` on the
        last one of each pixel-group (a single column may carry both).
    wr : ``In(WritePortSignature(wa_bits, dw_weight_layout(config)))``
        Weight memory write port (always ready); word ``waddr`` row ``t`` lane ``i`` is the
        weight of mid lane ``i`` for that column's row ``t``. Write weights only while no
        taps are in flight (the read port is not transparent).
    o : ``Out(stream.Signature(acc_layout(dw_lanes, mid_groups_max, acc_bits=...)))``
        One word per pixel-group: ``acc`` (``P`` signed ``dw_acc_bits`` values) and the
        ``group`` of its last column.

    Attributes
    ----------
    LATENCY : int
        A column with ``last`` accepted in cycle ``t`` makes ``o.valid`` high in cycle
        ``t + LATENCY`` (when not stalled); ``N`` columns with ``o`` always ready take
        ``N + LATENCY`` cycles from the first column to the last output.
    """

    LATENCY = 5

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"'config' must be an AcceleratorConfig, not {config!r}")
        self.config = config
        super().__init__({
            "taps": In(stream.Signature(tap_layout(config))),
            "wr": In(WritePortSignature(_addr_bits(config.dw_weight_depth),
                                        dw_weight_layout(config))),
            "o": Out(stream.Signature(acc_layout(config.dw_lanes, config.mid_groups_max,
                                                 acc_bits=dw_acc_bits(config)))),
        })

    def elaborate(self, platform):
        P, T = self.config.dw_lanes, self.config.dw_taps
        m = Module()

        m.submodules.weights = mem = Memory(shape=dw_weight_layout(self.config),
                                            depth=self.config.dw_weight_depth, init=[])
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data), wp.en.eq(self.wr.en)]

        # Global stall: every stage moves together whenever the output register is free or
        # being emptied.
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.taps.ready.eq(adv)]

        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.taps.payload.waddr), rp.en.eq(adv)]

        # Stage 1: the column, aligned with the weight word the read port returns. Stage 1b:
        # both again, the weight word in the block RAM's output register.
        tap1, tap1b = Signal(tap_layout(self.config)), Signal(tap_layout(self.config))
        v1, v1b = Signal(), Signal()
        w1b = Signal.like(rp.data)
        # Stage 2: the products (16 bits hold every int8 x int8 product, -128*-128 included).
        prod2 = Signal(data.ArrayLayout(data.ArrayLayout(signed(16), P), T))
        # Stage 3: their sum per lane.
        sum3 = Signal(data.ArrayLayout(signed(16 + (T - 1).bit_length()), P))
        ctrl = data.StructLayout({"valid": 1, "first": 1, "last": 1,
                                  "group": tap1.group.shape()})
        c2, c3 = Signal(ctrl), Signal(ctrl)

        with m.If(adv):
            m.d.sync += [tap1.eq(self.taps.payload), v1.eq(self.taps.valid),
                         tap1b.eq(tap1), v1b.eq(v1), w1b.eq(rp.data)]
            m.d.sync += [prod2[t][i].eq(lut_multiply(tap1b.data[t][i], w1b[t][i]))
                         for t in range(T) for i in range(P)]
            m.d.sync += [c2.valid.eq(v1b), c2.first.eq(tap1b.first), c2.last.eq(tap1b.last),
                         c2.group.eq(tap1b.group), c3.eq(c2)]
            for i in range(P):
                total = prod2[0][i]
                for t in range(1, T):
                    total = total + prod2[t][i]
                m.d.sync += sum3[i].eq(total)
            # Stage 4: the accumulator is the output register.
            m.d.sync += self.o.valid.eq(c3.valid & c3.last)
            with m.If(c3.valid):
                m.d.sync += self.o.payload.group.eq(c3.group)
                acc = self.o.payload.acc
                m.d.sync += [acc[i].eq(Mux(c3.first, 0, acc[i]) + sum3[i]) for i in range(P)]
        return m
