"""The controller's shift-add multiplier (``hw/products.py``) against Python products."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from dwsep.hw.config import get_config
from dwsep.hw.layout import (
    DESCRIPTOR,
    DESCRIPTOR_PRODUCTS,
    descriptor_products,
    product_operand_bits,
    scale,
)
from dwsep.hw.products import DescriptorProducts, product_cycles


def random_fields(rng, cfg):
    """Descriptor fields with every product operand within the range checks' limits (other
    fields random: the unit must not look at them)."""
    d = {f.name: rng.randrange(1 << f.width) for f in DESCRIPTOR if not f.signed}
    d.update({f.name: rng.randrange(-(1 << f.width - 1), 1 << f.width - 1)
              for f in DESCRIPTOR if f.signed})
    row_words = cfg.lb_row_capacity_words
    limits = {"in_h": cfg.max_dim, "in_w": cfg.max_dim, "out_h": cfg.max_dim,
              "out_w": cfg.max_dim, "in_groups": row_words, "exp_groups": row_words,
              "mid_groups": cfg.mid_groups_max, "out_groups": cfg.out_groups_max,
              "kernel": cfg.k_max, "dilation": cfg.dilation_max,
              "depth_mult": cfg.mid_groups_max,
              "out_beats": cfg.out_groups_max * cfg.pw_cols // 2}
    for name, hi in limits.items():
        # the extremes as often as the middle
        d[name] = rng.choice([1, hi, rng.randint(1, hi)])
    d["pad_left"] = rng.randrange(cfg.lb_window)
    d["dilation"] = min(d["dilation"], cfg.dilation_limit(d["kernel"]))
    return d


def run(cfg, descs):
    dut = DescriptorProducts(cfg)
    got = []

    async def bench(ctx):
        for d in descs:
            ctx.set(dut.desc, int.from_bytes(DESCRIPTOR.pack(**d), "little"))
            await ctx.tick()  # the first operands load in the idle cycle before start
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
                assert cycles < 1000, "done never rose"
            await ctx.tick()
            assert not ctx.get(dut.busy)
            got.append(({name: ctx.get(getattr(dut.products, name))
                         for name, _, _ in DESCRIPTOR_PRODUCTS}, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("name", ["tiny", "pynq-z2"])
def test_products_and_cycles(name):
    cfg = get_config(name)
    rng = random.Random(name)
    descs = [random_fields(rng, cfg) for _ in range(40)]
    for d, (products, cycles) in zip(descs, run(cfg, descs), strict=True):
        values = dict(d, dw_cols=cfg.dw_passes(d["kernel"]) * d["kernel"])
        want = {}
        for prod, a, b in DESCRIPTOR_PRODUCTS:   # restated here, not by the code under test
            values[prod] = want[prod] = values[a] * values[b]
        assert products == want
        assert products == descriptor_products(d, cfg)
        steps = sum(max(1, -(-values[b].bit_length() // 2)) for _, _, b in DESCRIPTOR_PRODUCTS)
        # `done` is a register: high the cycle after the last product's store
        assert cycles == steps + 1 == product_cycles(d, cfg)


def test_operand_bits_cover_limits():
    cfg = get_config("pynq-z2")
    bits = product_operand_bits(cfg)
    assert bits["in_w"] == 9 and bits["out_groups"] == 4 and bits["kernel"] == 3  # 11 groups
    assert all(b in bits for _, _, b in DESCRIPTOR_PRODUCTS)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 12, 18])
def test_scale(n):
    """``scale(v, n)`` equals ``v * n`` on ints and on Amaranth values (shifts and adds, no
    multiplier cell)."""
    value = Signal(6)
    product = Signal(12)
    m = Module()
    m.d.comb += product.eq(scale(value, n))

    async def bench(ctx):
        for v in range(64):
            ctx.set(value, v)
            assert ctx.get(product) == v * n == scale(v, n), (v, n)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError, match="'c' must be a positive int, not 0"):
        scale(value, 0)
