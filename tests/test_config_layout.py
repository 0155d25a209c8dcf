"""AcceleratorConfig validation and the register/descriptor declarations."""

import dataclasses
import json

import pytest
from helpers import AxiLiteManager

from dwsep.host.backends.reference import ReferenceDevice
from dwsep.hw.axi import Resp
from dwsep.hw.config import CONFIGS, AcceleratorConfig, ConfigError, get_config
from dwsep.hw.csr import ControlRegisters
from dwsep.hw.layout import (
    DESCRIPTOR,
    REGISTERS,
    ErrorCode,
    Opcode,
    capability_values,
    export_json,
)
from dwsep.sim.streams import run_sim


def test_named_configs_exist_and_pynq_z2_has_k_max_7():
    assert {"tiny", "pynq-z2"} <= set(CONFIGS)
    assert get_config("pynq-z2").k_max >= 7
    assert get_config("pynq-z2").axi_data_width == 64


def test_unknown_config_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown accelerator config 'zz'.*tiny"):
        get_config("zz")


@pytest.mark.parametrize("change, message", [
    ({"dw_lanes": 12}, "dw_lanes must be a multiple of 8, not 12"),
    ({"pw_rows": 16}, r"pw_rows \(16\) must equal dw_lanes \(8\)"),
    ({"axi_data_width": 32}, "axi_data_width must be 64"),
    ({"k_max": 0}, "k_max must be a positive int, not 0"),
    ({"lb_channels": 60}, r"lb_channels \(60\) must be a multiple of dw_lanes"),
    ({"out_channels_max": 60}, r"out_channels_max \(60\) must be a multiple of pw_cols"),
    ({"engine_weight_words": 287}, r"engine_weight_words \(287\) must be at least "
                                   r"expand_weight_depth \+ mid_groups_max \(288\)"),
    ({"engine_weight_words": 0}, "engine_weight_words must be a positive int, not 0"),
    ({"dw_weight_words": 95}, r"dw_weight_words \(95\) must be at least 96: a 3x3 depthwise "
                              "stage of mid_channels_max channels"),
    ({"engine_requant_lanes": 3}, r"engine_requant_lanes \(3\) must divide pw_cols \(8\)"),
    ({"engine_requant_lanes": 0}, "engine_requant_lanes must be a positive int, not 0"),
    ({"engine_requant_lut_lanes": 5}, r"engine_requant_lut_lanes \(5\) must not exceed the "
                                      r"engine requantizer's lanes \(4\)"),
    ({"engine_requant_lut_lanes": -1}, "engine_requant_lut_lanes must be a non-negative int"),
])
def test_invalid_configs_fail_at_construction(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(CONFIGS["tiny"], **change)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIGS["tiny"].k_max = 9


def test_derived_sizes():
    c = CONFIGS["tiny"]
    assert c.lb_window == 13 and c.lb_rows == 16
    assert [c.dilation_limit(k) for k in range(1, 8)] == [12, 12, 6, 4, 3, 2, 2]
    p = CONFIGS["pynq-z2"]
    assert (p.lb_rows, [p.dilation_limit(k) for k in range(2, 8)]) == (8, [6, 3, 2, 1, 1, 1])
    assert c.lb_row_words == c.lb_width * c.lb_channels // c.dw_lanes
    # 32 mid groups x 3 passes of 3 kernel rows (k_max 7) x 7 columns
    assert c.dw_passes(7) == 3 and c.dw_passes(3) == 1 and c.dw_passes(4) == 2
    assert c.dw_weight_depth == (c.mid_channels_max // 8) * 3 * 7
    # the engine's weight memory: by default both largest tables, else its own parameter
    assert c.engine_weight_depth == 32 * 8 + 8 * 32
    assert dataclasses.replace(c, engine_weight_words=300).engine_weight_depth == 300
    # the DW weight memory: by default mid_channels_max at k_max, else its own parameter,
    # which bounds a stage's channels by its kernel
    assert dataclasses.replace(c, dw_weight_words=200).dw_weight_depth == 200
    assert [c.dw_channels_max(k) for k in (1, 3, 7)] == [256] * 3
    z2 = CONFIGS["pynq-z2"]
    assert z2.engine_weight_depth == 1024 < z2.expand_weight_depth + z2.pw_weight_depth == 1088
    assert z2.dw_weight_depth == 512 and z2.dw_words(64, 3) == 192
    assert [z2.dw_channels_max(k) for k in (3, 5, 7)] == [1024, 816, 384]
    # the engine's requantizer: requant_lanes by default, else its own parameter
    assert c.erq_lanes == c.requant_lanes == 4
    assert (z2.erq_lanes, z2.requant_lanes) == (12, 8)


def test_descriptor_round_trip_and_range_checks():
    values = {f.name: (-5 if f.signed else (1 << f.width) - 1) for f in DESCRIPTOR}
    raw = DESCRIPTOR.pack(**values)
    assert len(raw) == DESCRIPTOR.size
    assert DESCRIPTOR.unpack(raw) == values
    values["kernel"] = 16  # 4-bit field
    with pytest.raises(ValueError, match="field 'kernel' takes 0..15, not 16"):
        DESCRIPTOR.pack(**values)
    with pytest.raises(ValueError, match="missing"):
        DESCRIPTOR.pack(opcode=int(Opcode.LAYER))


def test_fields_do_not_overlap_or_cross_words():
    for fields in [DESCRIPTOR.fields, *(r.fields for r in REGISTERS)]:
        used = 0
        for f in fields:
            assert used & f.mask == 0, f.name
            used |= f.mask
            assert f.lsb // 32 == (f.lsb + f.width - 1) // 32, f.name


def test_register_map_fits_the_csr_bus():
    """Distinct names and offsets, whole words, each register's fields inside its 32-bit
    word, the export naming the same offsets, and every register within the AXI4-Lite
    address width the CSR block is built with (``REGISTERS.addr_width``), no wider than
    needed."""
    offsets = {r.name: r.offset for r in REGISTERS}
    assert len(offsets) == len(REGISTERS.registers)
    assert len(set(offsets.values())) == len(offsets)
    assert all(offset % 4 == 0 for offset in offsets.values())
    assert all(f.lsb + f.width <= 32 for r in REGISTERS for f in r.fields)
    last_byte = max(offsets.values()) + 3
    assert 2 ** (REGISTERS.addr_width - 1) <= last_byte < 2 ** REGISTERS.addr_width
    exported = json.loads(export_json())["registers"]
    assert {r["name"]: r["offset"] for r in exported} == offsets


def test_every_register_answers_at_its_offset():
    """The CSR block (``hw/csr.py``, simulated) with a distinct value behind every register:
    each register's offset reads that register's value, and the reference device (the
    driver's model of the hardware) reads the same at the offsets whose state it holds.
    On pynq-z2 no two registers' words are equal, so a register at another's offset fails."""
    cfg = CONFIGS["pynq-z2"]
    dut = ControlRegisters(cfg)
    ref = ReferenceDevice(cfg)
    cycles = 0x0000_0123_89AB_CDEF
    state = {"CTRL": {"irq_enable": 1}, "STATUS": {"busy": 0, "done": 0, "error": 1},
             "ERROR": {"code": ErrorCode.MISALIGNED, "layer": 0x1234},
             "ERROR_ADDR": {"addr": 0x89AB_CDE0}, "PROGRAM": {"addr": 0x4567_89A8},
             "WINDOW_LO": {"addr": 0x1357_9BD8}, "WINDOW_HI": {"addr": 0x2468_ACE7},
             "LAYER": {"index": 0x0BCD},
             "CYCLES_LO": {"value": cycles & 0xFFFF_FFFF}, "CYCLES_HI": {"value": cycles >> 32},
             **capability_values(cfg)}
    want = {name: sum(REGISTERS[name].field(f).encode(v) for f, v in fields.items())
            for name, fields in state.items()}
    assert want.keys() == {r.name for r in REGISTERS}
    assert len(set(want.values())) == len(want)
    got = {}
    mgr = AxiLiteManager(dut.s_axil)

    async def bench(ctx):
        for name in ("CTRL", "PROGRAM", "WINDOW_LO", "WINDOW_HI"):
            assert await mgr.write(ctx, REGISTERS[name].offset, want[name]) == Resp.OKAY
            ref.write_word(REGISTERS[name].offset, want[name])
        ctx.set(dut.error_code, state["ERROR"]["code"])
        ctx.set(dut.error_layer, state["ERROR"]["layer"])
        ctx.set(dut.error_addr, state["ERROR_ADDR"]["addr"])
        ctx.set(dut.error, 1)
        await ctx.tick()
        ctx.set(dut.error, 0)
        ctx.set(dut.layer, state["LAYER"]["index"])
        ctx.set(dut.cycles, cycles)
        for reg in REGISTERS:  # CYCLES_LO before CYCLES_HI: the LO read latches HI
            got[reg.name], resp = await mgr.read(ctx, reg.offset)
            assert resp == Resp.OKAY

    run_sim(dut, bench, deadline_cycles=1_000)
    assert got == want
    for name in ("CTRL", "PROGRAM", "WINDOW_LO", "WINDOW_HI", *capability_values(cfg)):
        assert ref.read_word(REGISTERS[name].offset) == want[name], name


def test_capabilities_fit_their_fields():
    for config in CONFIGS.values():
        for reg, fields in capability_values(config).items():
            for name, value in fields.items():
                REGISTERS[reg].field(name).encode(value)


def test_export_json_is_loadable_and_complete():
    data = json.loads(export_json(CONFIGS["tiny"]))
    assert {r["name"] for r in data["registers"]} == {r.name for r in REGISTERS}
    assert data["descriptor"]["size"] == DESCRIPTOR.size
    assert data["config"]["name"] == "tiny"
    assert isinstance(AcceleratorConfig(**data["config"]), AcceleratorConfig)
