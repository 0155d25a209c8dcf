"""Helpers and constants shared by several test modules (imported as ``helpers``: pytest puts
``tests/`` on ``sys.path`` for the conftest beside it, in every xdist worker too). Fixtures
live in ``conftest.py``; a test module imports no other test module."""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from dwsep.host import imagenet
from dwsep.host.graph import Graph, Operator
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model, random_mobilenet_spec
from dwsep.hw.config import get_config

TINY = get_config("tiny")
PYNQ_Z2 = get_config("pynq-z2")
#: tiny with a small mid memory: a wide head is stored in slices, pooled slice by slice, and
#: the FC adds its partial sums on the host
SLICED = dataclasses.replace(TINY, name="tiny-sliced", mid_channels_max=72,
                             out_channels_max=16)
#: a 16 x 24 engine behind 16 DW lanes (``pw_cols != dw_lanes``), not in the top level yet
P16Q24 = dataclasses.replace(TINY, name="p16q24", dw_lanes=16, pw_rows=16, pw_cols=24,
                             lb_channels=128, out_channels_max=96, requant_lanes=8,
                             add_lanes=2)


def random_int8(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform int8 with both extremes (-128, 127) forced into random positions."""
    a = rng.integers(-128, 128, size=shape, dtype=np.int8)
    flat = a.reshape(-1)
    if not flat.size:
        return a
    flat[rng.integers(flat.size, size=max(2, flat.size // 16))] = -128
    flat[rng.integers(flat.size)] = 127
    return a


def calibration_photos() -> list:
    """The offline sample photos except ``grace_hopper``, which stays held out for top-1."""
    return [p for name, p in imagenet.sample_images().items() if name != "grace_hopper"]


def chain(n: int, seed: int) -> Graph:
    """``n`` random layers where each PW output feeds the next DW (renamed ``l<i>/...``)."""
    rng = np.random.default_rng(seed)
    c, tensors, ops, prev = int(rng.integers(1, 20)), {}, [], None
    for i in range(n):
        c_out = int(rng.integers(1, 20))
        spec = LayerSpec(h=9, w=11, c=c, depth_multiplier=int(rng.integers(1, 4)), kernel=3,
                         stride=1, dilation=1, padding="SAME", dw_activation="RELU6",
                         c_out=c_out, pw_activation="NONE", seed=seed * 10 + i)
        g = read_tflite(dwsep_layer_model(spec))
        rename = {name: f"l{i}/{name}" for name in g.tensors}
        if prev is not None:
            rename["input"] = prev.name
            # Layer i reads the previous output with that tensor's quantization.
            g.tensors["input"] = prev
        for name, t in g.tensors.items():
            t.name = rename[name]
            tensors[t.name] = t
        for op in g.operators:
            ops.append(Operator(op.opcode, [rename[x] for x in op.inputs],
                                [rename[x] for x in op.outputs], op.options, len(ops)))
        prev, c = tensors[rename["pw/out"]], c_out
    return Graph(tensors, ops, ["l0/input"], [prev.name])


def network(config, seed: int, limits: dict):
    """A random MobileNet-like spec whose last feature map fits the pooling kernel (the stem
    and each stride-2 block halve it, rounding up); on ``SLICED`` the head is wider than
    the mid memory; on configs other than ``TINY`` odd seeds have more classes than
    ``out_channels_max``."""
    rng = np.random.default_rng(seed)
    spec = random_mobilenet_spec(rng, **limits)
    n2 = 1 + sum(b.stride == 2 for b in spec.blocks)
    limit = config.k_max << n2
    spec = dataclasses.replace(spec, h=min(spec.h, limit), w=min(spec.w, limit))
    if config is SLICED:
        spec = dataclasses.replace(spec, head_channels=int(rng.integers(73, 120)))
    if config is not TINY and seed % 2:
        # more classes than an output tile: the pool runs alone, the FC reads its vector
        spec = dataclasses.replace(spec, classes=int(rng.integers(
            config.out_channels_max + 1, 3 * config.out_channels_max)))
    return spec


class AxiLiteManager:
    """AXI4-Lite manager for Amaranth testbenches, checking the subordinate as it goes.

    Each :meth:`write`/:meth:`read` runs one transaction cycle by cycle. Before each valid it
    idles a random number of cycles, and it drops ready at random, both with probability
    ``p_stall`` per cycle (``rng=None``: no stalls). Writes present AW and W in one of
    :attr:`ORDERS`. It asserts that B comes only after both AW and W handshakes, R only after
    AR, and that ``bvalid``/``rvalid`` and their payload hold until accepted. Reads and writes
    use disjoint channels, so two testbenches may run them concurrently on one manager.

    Attributes
    ----------
    latency : dict
        ``"read"``/``"write"``: clock edges from the (last) address/data handshake to the
        first edge with ``rvalid``/``bvalid`` high, for the last transaction of each kind.
    ticks : int
        Clock edges this manager has waited for, over all transactions.
    """

    ORDERS = ("aw_first", "w_first", "together", "independent")

    def __init__(self, bus, rng: random.Random | None = None, p_stall: float = 0.0):
        self.bus, self.rng, self.p_stall = bus, rng, p_stall
        self.latency: dict[str, int] = {}
        self.ticks = 0

    def _idle_cycles(self) -> int:
        n = 0
        while self.rng is not None and self.rng.random() < self.p_stall:
            n += 1
        return n

    def _ready(self) -> bool:
        return self.rng is None or self.rng.random() >= self.p_stall

    async def write(self, ctx, addr: int, data: int, strb: int = 0xF,
                    order: str | None = None) -> int:
        """Write ``data`` under byte strobes ``strb``; returns BRESP."""
        if order is None:
            order = self.rng.choice(self.ORDERS) if self.rng else "together"
        assert order in self.ORDERS, order
        bus = self.bus
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wdata, data)
        ctx.set(bus.wstrb, strb)
        aw_wait = self._idle_cycles()
        w_wait = aw_wait if order == "together" else self._idle_cycles()
        aw_done = w_done = False
        both_at = b_first = held = None
        while True:
            aw_allowed = order != "w_first" or w_done
            w_allowed = order != "aw_first" or aw_done
            aw_go = not aw_done and aw_allowed and aw_wait == 0
            w_go = not w_done and w_allowed and w_wait == 0
            bready = self._ready()
            ctx.set(bus.awvalid, aw_go)
            ctx.set(bus.wvalid, w_go)
            ctx.set(bus.bready, bready)
            _, _, awready, wready, bvalid, bresp = await ctx.tick().sample(
                bus.awready, bus.wready, bus.bvalid, bus.bresp)
            self.ticks += 1
            if held is not None:
                assert bvalid and bresp == held, "bvalid/bresp dropped before bready"
            if bvalid:
                assert aw_done and w_done, f"B before AW ({aw_done}) and W ({w_done})"
                if b_first is None:
                    b_first = self.ticks
                if bready:
                    break
                held = bresp
            if aw_go and awready:
                aw_done = True
            elif not aw_done and aw_allowed and aw_wait:
                aw_wait -= 1
            if w_go and wready:
                w_done = True
            elif not w_done and w_allowed and w_wait:
                w_wait -= 1
            if aw_done and w_done and both_at is None:
                both_at = self.ticks
        for sig in (bus.awvalid, bus.wvalid, bus.bready):
            ctx.set(sig, 0)
        self.latency["write"] = b_first - both_at
        return bresp

    async def read(self, ctx, addr: int) -> tuple[int, int]:
        """Read the word at ``addr``; returns ``(RDATA, RRESP)``."""
        bus = self.bus
        ctx.set(bus.araddr, addr)
        ar_wait = self._idle_cycles()
        ar_done = False
        ar_at = r_first = held = None
        while True:
            ar_go = not ar_done and ar_wait == 0
            rready = self._ready()
            ctx.set(bus.arvalid, ar_go)
            ctx.set(bus.rready, rready)
            _, _, arready, rvalid, rdata, rresp = await ctx.tick().sample(
                bus.arready, bus.rvalid, bus.rdata, bus.rresp)
            self.ticks += 1
            if held is not None:
                assert rvalid and (rdata, rresp) == held, "rvalid/rdata dropped before rready"
            if rvalid:
                assert ar_done, "R before AR"
                if r_first is None:
                    r_first = self.ticks
                if rready:
                    break
                held = (rdata, rresp)
            if ar_go and arready:
                ar_done, ar_at = True, self.ticks
            elif not ar_done and ar_wait:
                ar_wait -= 1
        ctx.set(bus.arvalid, 0)
        ctx.set(bus.rready, 0)
        self.latency["read"] = r_first - ar_at
        return rdata, rresp
