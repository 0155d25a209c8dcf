"""LineBuffer against its NumPy tap-stream model, under random valid/ready stalls."""

from __future__ import annotations

import gc
import random

import numpy as np
import pytest
from amaranth.back import rtlil

from dwsep.hw.config import CONFIGS, AcceleratorConfig
from dwsep.hw.layout import DESCRIPTOR, DESCRIPTOR_PRODUCTS
from dwsep.hw.line_buffer import PARAM_SOURCES, LineBuffer, line_buffer_params_layout
from dwsep.sim.models.line_buffer import beats_from_tensor, tap_stream_model
from dwsep.sim.streams import run_sim, send_all

TINY = CONFIGS["tiny"]
# Two beats per word, 8 row slots (k_max=3, lb_window=5: 3x3 at dilation 2) and 16-word rows:
# slot reuse and beat packing at a fraction of tiny's cost.
# Columns of 2 rows: a 3x3 kernel takes two passes, the second with a row past the kernel.
SMALL = AcceleratorConfig(
    name="lb-small", dw_lanes=16, pw_rows=16, pw_cols=8, k_max=3, lb_window=5,
    max_dim=16, lb_width=8, lb_channels=32, mid_channels_max=96, out_channels_max=8,
    expand_channels_max=16, dw_taps=2,
)


def make_layer(rng, cfg, *, h, w, groups, m, k, s, d, pads=None, style="same", conv=False):
    """A layer dict: params (LineBuffer field names) plus the input tensor ``x``. ``pads`` =
    ``(top, bottom, left, right)`` overrides ``style`` ('same' as TFLite, or 'valid');
    ``conv``: one kernel row per column (conv mode)."""
    eff = (k - 1) * d + 1
    if pads is None:
        if style == "same":
            oh, ow = -(-h // s), -(-w // s)
            ph = max((oh - 1) * s + eff - h, 0)
            pw = max((ow - 1) * s + eff - w, 0)
            pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        else:
            pads = (0, 0, 0, 0)
    top, bottom, left, right = pads
    out_h = (h + top + bottom - eff) // s + 1
    out_w = (w + left + right - eff) // s + 1
    x = np.array([rng.randrange(-128, 128) for _ in range(h * w * groups * cfg.dw_lanes)],
                 dtype=np.int8).reshape(h, w, groups * cfg.dw_lanes)
    return {"in_h": h, "in_w": w, "in_groups": groups, "depth_mult": m, "kernel": k,
            "stride": s, "dilation": d, "pad_top": top, "pad_left": left,
            "out_h": out_h, "out_w": out_w, "in_zp": rng.randrange(-128, 128),
            "conv": int(conv), "row_words": w * groups, "left_words": left * groups,
            "dil_words": d * groups, "x": x}


def n_taps(cfg, layer):
    """Tap columns of ``layer``: ``out_h*out_w*G*m*R*k``."""
    k = layer["kernel"]
    passes = k if layer["conv"] else cfg.dw_passes(k)
    return (layer["out_h"] * layer["out_w"] * layer["in_groups"] * layer["depth_mult"]
            * passes * k)


def random_layer(rng, cfg, max_taps):
    """A random valid layer within ``cfg``'s limits and a tap budget (rejection sampling)."""
    while True:
        k = rng.randint(1, min(7, cfg.k_max))
        d = rng.randint(1, min(3, cfg.dilation_limit(k)))
        s = rng.choice([1, 2])
        groups = rng.randint(1, min(3, cfg.in_groups_max))
        m = rng.randint(1, min(3, cfg.mid_groups_max // groups))
        h = rng.randint(1, min(20, cfg.max_dim))
        w = rng.randint(1, min(12, cfg.lb_row_words // groups))
        style = rng.choice(["same", "valid", "any"])
        pads = None
        if style == "any":
            pads = tuple(rng.randint(0, min(k * d, cfg.lb_window) - 1) for _ in range(4))
        eff = (k - 1) * d + 1
        if style == "valid" and (h < eff or w < eff):
            continue
        layer = make_layer(rng, cfg, h=h, w=w, groups=groups, m=m, k=k, s=s, d=d, pads=pads,
                           style=style, conv=rng.random() < 0.2)
        if layer["out_h"] >= 1 and layer["out_w"] >= 1 and n_taps(cfg, layer) <= max_taps:
            return layer


def model_taps(cfg, layer):
    return tap_stream_model(
        layer["x"], lanes=cfg.dw_lanes, taps=cfg.dw_taps, depth_mult=layer["depth_mult"],
        kernel=layer["kernel"], stride=layer["stride"], dilation=layer["dilation"],
        pad_top=layer["pad_top"], pad_left=layer["pad_left"], out_h=layer["out_h"],
        out_w=layer["out_w"], in_zp=layer["in_zp"], conv=bool(layer["conv"]))


def decode_taps(cfg, raws):
    """Split raw tap payload integers into the model's dict of arrays."""
    P, T = cfg.dw_lanes, cfg.dw_taps
    waddr_bits = max(1, (cfg.dw_weight_depth - 1).bit_length())
    group_bits = max(1, (cfg.mid_groups_max - 1).bit_length())
    data = np.array([list((r & ((1 << 8 * T * P) - 1)).to_bytes(T * P, "little"))
                     for r in raws], dtype=np.uint8).view(np.int8).reshape(len(raws), T, P)
    pos = 8 * T * P
    first = np.array([(r >> pos) & 1 for r in raws], dtype=bool)
    last = np.array([(r >> (pos + 1)) & 1 for r in raws], dtype=bool)
    waddr = np.array([(r >> (pos + 2)) & ((1 << waddr_bits) - 1) for r in raws])
    group = np.array([(r >> (pos + 2 + waddr_bits)) & ((1 << group_bits) - 1) for r in raws])
    return {"data": data, "first": first, "last": last, "waddr": waddr, "group": group}


def transfers(beats: list[int], per_word: int, cut: str, rng: random.Random) -> list[dict]:
    """``fill`` payloads of ``beats``: one beat each (``cut="beats"``), a whole word of
    ``per_word`` beats each (``"words"``), or each word cut at random into transfers of
    consecutive beats (``"random"``)."""
    out = []
    for w in range(0, len(beats), per_word):
        word, i = beats[w:w + per_word], 0
        while i < per_word:
            n = {"beats": 1, "words": per_word - i}.get(cut) or rng.randint(1, per_word - i)
            out.append({"data": sum(b << (64 * k) for k, b in enumerate(word[i:i + n])),
                        "beats": n})
            i += n
    return out


def simulate(cfg, layers, *, seed=0, p_fill=0.0, p_taps=0.0, cut="beats"):
    """Run ``layers`` back to back on one LineBuffer; return the taps of each layer and the
    cycles from each start pulse to ``busy`` falling. ``cut``: how the fill beats are
    grouped into transfers (:func:`transfers`)."""
    dut = LineBuffer(cfg)
    rng_fill, rng_taps = random.Random(seed), random.Random(seed + 1)
    taps_per_layer = [n_taps(cfg, layer) for layer in layers]
    raws, cycles = [], []
    sent = [0]

    async def control(ctx):
        for layer in layers:
            ctx.set(dut.params, {k: v for k, v in layer.items() if k != "x"})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            n = 1
            while (await ctx.tick().sample(dut.busy))[2]:
                n += 1
            cycles.append(n)
            done_taps = sum(taps_per_layer[:len(cycles)])
            assert len(raws) == done_taps, f"busy fell after {len(raws)}/{done_taps} taps"
            assert sent[0] == len(cycles), "busy fell before every fill beat was taken"

    async def fill(ctx):
        rng_cut = random.Random(seed + 2)
        for layer in layers:
            payloads = transfers(beats_from_tensor(layer["x"]), cfg.dw_lanes // 8, cut,
                                 rng_cut)
            await send_all(ctx, dut.fill, payloads, rng=rng_fill, p_stall=p_fill)
            sent[0] += 1

    async def taps(ctx):
        for _ in range(sum(taps_per_layer)):
            while rng_taps.random() < p_taps:
                await ctx.tick()
            ctx.set(dut.taps.ready, 1)
            while True:
                _, _, valid, payload, busy = await ctx.tick().sample(
                    dut.taps.valid, dut.taps.payload, dut.busy)
                if valid:
                    break
            assert busy, "busy low while a tap is still pending"
            raws.append(payload.as_value().value)
            ctx.set(dut.taps.ready, 0)

    budget = 50 * sum(taps_per_layer) + 20 * sum(len(beats_from_tensor(x["x"])) for x in layers)
    run_sim(dut, control, fill, taps, deadline_cycles=budget + 1000)

    out, pos = [], 0
    for n in taps_per_layer:
        out.append(decode_taps(cfg, raws[pos:pos + n]))
        pos += n
    return out, cycles


def check(cfg, layers, **kw):
    got, cycles = simulate(cfg, layers, **kw)
    for i, (layer, taps) in enumerate(zip(layers, got, strict=True)):
        want = model_taps(cfg, layer)
        desc = {k: v for k, v in layer.items() if k != "x"}
        for name in ("waddr", "group", "first", "last"):
            np.testing.assert_array_equal(taps[name], want[name], f"{name}, layer {i} {desc}")
        # rows past the kernel are unspecified
        differ = (taps["data"] != want["data"]).any(axis=2) & want["rows"]
        bad = np.nonzero(differ.any(axis=1))[0]
        assert bad.size == 0, f"layer {i} {desc}: {bad.size} columns differ, first at {bad[0]}"
    return cycles


STALLS = [(0.3, 0.3),
          (0.0, 0.6),   # fill runs ahead: proves it never overwrites a row still needed
          (0.6, 0.0),   # taps wait on rows
          (0.1, 0.1)]


@pytest.mark.parametrize("cfg", [TINY, SMALL], ids=lambda c: c.name)
@pytest.mark.parametrize("seed", range(12))
def test_random_layers(cfg, seed):
    """Three random layers back to back on one instance (each start resets the counters)."""
    p_fill, p_taps = STALLS[seed % len(STALLS)]
    cut = ("beats", "random", "words")[seed % 3]
    print(f"seed={seed} p_fill={p_fill} p_taps={p_taps} cut={cut}")
    rng = random.Random(seed)
    layers = [random_layer(rng, cfg, max_taps=3000) for _ in range(3)]
    check(cfg, layers, seed=seed, p_fill=p_fill, p_taps=p_taps, cut=cut)


DIRECTED = {
    # 13-row window (k=7, d=2) and H > lb_rows=16: every slot reused, SAME pads of 6.
    "k7d2_tall": (TINY, dict(h=18, w=2, groups=1, m=1, k=7, s=1, d=2)),
    # Stride 2 with a 9-row window through 16 slots.
    "k5d2_s2_tall": (TINY, dict(h=20, w=3, groups=1, m=1, k=5, s=2, d=2)),
    "k1_stride2_leftovers": (TINY, dict(h=7, w=5, groups=2, m=2, k=1, s=2, d=1,
                                        style="valid")),
    "1x1_image_k7": (TINY, dict(h=1, w=1, groups=3, m=2, k=7, s=1, d=1)),
    "1x1_image_k1_d2_valid": (SMALL, dict(h=1, w=1, groups=1, m=1, k=1, s=1, d=2,
                                          style="valid")),
    # VALID, stride 2: row 9 (and column 9) are reached by no window but must be drained.
    "valid_unused_bottom": (SMALL, dict(h=10, w=6, groups=2, m=1, k=3, s=2, d=1,
                                        style="valid")),
    # out_h = 16 output rows through 8 slots, 5-row window.
    "tall_slot_reuse": (SMALL, dict(h=16, w=3, groups=1, m=3, k=3, s=1, d=2)),
    # Padding beyond the first/last rows only (a window row fully outside the image).
    "big_pads": (SMALL, dict(h=3, w=3, groups=1, m=1, k=3, s=1, d=2, pads=(5, 5, 4, 5))),
}


@pytest.mark.parametrize("name", DIRECTED)
def test_directed(name):
    cfg, shape = DIRECTED[name]
    seed = sorted(DIRECTED).index(name)
    rng = random.Random(seed)
    layer = make_layer(rng, cfg, **shape)
    check(cfg, [layer], seed=seed, p_fill=0.2, p_taps=0.2, cut="random")


@pytest.mark.parametrize("cfg, cut", [(TINY, "beats"), (SMALL, "beats"), (SMALL, "words")],
                         ids=lambda v: getattr(v, "name", v))
def test_cycles_no_stalls(cfg, cut):
    """k=3 SAME stride 1: tap columns outnumber fill transfers, so after the first output
    row's input rows have arrived the block emits one column per cycle with no bubble at
    pixel or row boundaries: cycles = columns + (transfers of the first 2 input rows: a beat
    or a whole word each) + 5, where the 5 are the start cycle, the fill-write-to-read
    cycle, the read port's register, the slots' data registers and the output register."""
    rng = random.Random(7)
    layer = make_layer(rng, cfg, h=8, w=8, groups=2, m=1, k=3, s=1, d=1)
    (cycles,) = check(cfg, [layer], cut=cut)
    first_rows_words = 2 * layer["in_w"] * layer["in_groups"]
    per_transfer = 1 if cut == "beats" else cfg.dw_lanes // 8
    assert cycles == (n_taps(cfg, layer) + first_rows_words * cfg.dw_lanes // 8 // per_transfer
                      + 5)


def test_params_layout_matches_descriptor():
    """The top level connects descriptor fields to ``params`` by name."""
    layout = line_buffer_params_layout(TINY)
    names = {f.name for f in DESCRIPTOR}
    products = {name: (a, b) for name, a, b in DESCRIPTOR_PRODUCTS}
    for name, shape in layout.members.items():
        if name == "conv":  # the CONV flag bit
            continue
        source = PARAM_SOURCES.get(name, name)
        if source in products:  # a product of fields: its operands are params too
            a, b = products[source]
            assert {a, b} <= {PARAM_SOURCES.get(n, n) for n in layout.members}, name
            continue
        assert source in names, name
        assert shape.width <= DESCRIPTOR[source].width, name
        assert shape.signed == DESCRIPTOR[source].signed, name


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_rejects_non_config():
    with pytest.raises(TypeError, match="'config' must be an AcceleratorConfig, not 'tiny'"):
        LineBuffer("tiny")
    gc.collect()  # the half-built instance warns when collected: do it under the filter


@pytest.mark.parametrize("cfg", [TINY, SMALL], ids=lambda c: c.name)
def test_converts_to_rtlil(cfg):
    """The block yields a netlist (the bigger named configs take too long here: their
    line-buffer memories have 16k-64k words)."""
    rtlil.convert(LineBuffer(cfg))


def test_beats_from_tensor():
    x = np.arange(16, dtype=np.int8).reshape(1, 2, 8) - 4
    assert beats_from_tensor(x) == [
        int.from_bytes(bytes(v & 0xFF for v in range(-4, 4)), "little"),
        int.from_bytes(bytes(range(4, 12)), "little"),
    ]
