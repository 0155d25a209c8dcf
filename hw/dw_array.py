"""Depthwise PE array: ``P`` int8 multiply-accumulate lanes, one tap per cycle."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .ports import WritePortSignature

__all__ = ["DepthwiseArray", "tap_layout", "acc_layout"]


def _addr_bits(depth: int) -> int:
    """Bits of an address into ``depth`` words (at least 1)."""
    return max(1, (depth - 1).bit_length())


def tap_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the line buffer -> DW array stream: one tap of ``dw_lanes`` channels.

    ``data``: the ``P`` input bytes; ``first``/``last``: first/last tap of a pixel-group;
    ``waddr``: DW weight word of this tap (``(q*k + ky)*k + kx``); ``group``: mid group ``q``.
    """
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), config.dw_lanes),
        "first": 1,
        "last": 1,
        "waddr": unsigned(_addr_bits(config.dw_weight_depth)),
        "group": unsigned(_addr_bits(config.mid_groups_max)),
    })


def acc_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the DW array -> requantizer stream (the requantizer's input layout)."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(32), config.dw_lanes),
        "group": unsigned(_addr_bits(config.mid_groups_max)),
    })


class DepthwiseArray(wiring.Component):
    """Depthwise multiply-accumulate over the taps of each pixel-group.

    For every tap, lane ``i`` computes ``acc[i] = (first ? 0 : acc[i]) + data[i] *
    w[waddr][i]`` (int8 x int8 products, 32-bit two's-complement accumulation); the tap with
    ``last`` emits ``{acc, group}``. Pipeline: accept tap and read the weight memory (block
    RAM, registered read) -> multiply -> accumulate into the output register. The whole
    pipeline stalls while ``o`` holds a word that is not taken (global stall: ``taps.ready``
    follows ``o.ready`` combinationally), so nothing is lost or duplicated under any
    valid/ready pattern, and one tap per cycle flows while ``o`` is ready.

    Parameters
    ----------
    config : AcceleratorConfig
        ``P = config.dw_lanes`` lanes; the weight memory has ``config.dw_weight_depth`` words.

    Members
    -------
    taps : ``In(stream.Signature(tap_layout(config)))``
        Taps in pixel-group order, ``first`` on the first tap and ``last`` on the last one of
        each pixel-group (a single tap may carry both).
    wr : ``In(WritePortSignature(wa_bits, data.ArrayLayout(signed(8), P)))``
        Weight memory write port (always ready); word ``waddr`` lane ``i`` is the weight of
        mid lane ``i`` for that tap. Write weights only while no taps are in flight (the
        read port is not transparent).
    o : ``Out(stream.Signature(acc_layout(config)))``
        One word per pixel-group: ``acc`` (``int32[P]``) and the ``group`` of its last tap.

    Attributes
    ----------
    LATENCY : int
        A tap with ``last`` accepted in cycle ``t`` makes ``o.valid`` high in cycle
        ``t + LATENCY`` (when not stalled); ``N`` taps with ``o`` always ready take
        ``N + LATENCY`` cycles from the first tap to the last output.
    """

    LATENCY = 3

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"'config' must be an AcceleratorConfig, not {config!r}")
        self.config = config
        word = data.ArrayLayout(signed(8), config.dw_lanes)
        super().__init__({
            "taps": In(stream.Signature(tap_layout(config))),
            "wr": In(WritePortSignature(_addr_bits(config.dw_weight_depth), word)),
            "o": Out(stream.Signature(acc_layout(config))),
        })

    def elaborate(self, platform):
        P = self.config.dw_lanes
        m = Module()

        m.submodules.weights = mem = Memory(shape=data.ArrayLayout(signed(8), P),
                                            depth=self.config.dw_weight_depth, init=[])
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data), wp.en.eq(self.wr.en)]

        # Global stall: every stage moves together whenever the output register is free or
        # being emptied.
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.taps.ready.eq(adv)]

        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.taps.payload.waddr), rp.en.eq(adv)]

        # Stage 1: the tap, aligned with the weight word the read port returns.
        tap1 = Signal(tap_layout(self.config))
        v1 = Signal()
        # Stage 2: the products (16 bits hold every int8 x int8 product, -128*-128 included).
        prod2 = Signal(data.ArrayLayout(signed(16), P))
        v2, first2, last2 = Signal(), Signal(), Signal()
        group2 = Signal.like(tap1.group)

        with m.If(adv):
            m.d.sync += [tap1.eq(self.taps.payload), v1.eq(self.taps.valid)]
            m.d.sync += [prod2[i].eq(tap1.data[i] * rp.data[i]) for i in range(P)]
            m.d.sync += [v2.eq(v1), first2.eq(tap1.first), last2.eq(tap1.last),
                         group2.eq(tap1.group)]
            # Stage 3: the accumulator is the output register.
            m.d.sync += self.o.valid.eq(v2 & last2)
            with m.If(v2):
                m.d.sync += self.o.payload.group.eq(group2)
                acc = self.o.payload.acc
                m.d.sync += [acc[i].eq(Mux(first2, 0, acc[i]) + prod2[i]) for i in range(P)]
        return m
