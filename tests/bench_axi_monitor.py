"""cocotb bench of the AXI protocol monitors (``sim/axi_monitor.sv``), built alone by
``tests/test_axi_monitor.py``: legal handshakes count nothing; each rule, broken once, is
counted under its number."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer


async def _cycle(dut, **values):
    """Drive ``values`` for one cycle (set after a rising edge, sampled at the next)."""
    for name, value in values.items():
        getattr(dut, name).value = value
    await RisingEdge(dut.clk)
    await Timer(1, unit="ns")


async def _reset(dut):
    for name in ("valid", "ready", "payload", "req_a", "req_b", "resp_valid", "resp_done"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await Timer(1, unit="ns")


def _counted(dut) -> tuple[int, int]:
    return int(dut.violations.value), int(dut.first.value)


@cocotb.test()
async def rules(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await _reset(dut)
    # legal: a transfer that waits with its payload held, one taken at once, a response
    # to each of four requests in flight
    await _cycle(dut, valid=1, ready=0, payload=5)
    await _cycle(dut, valid=1, ready=0, payload=5)
    await _cycle(dut, valid=1, ready=1, payload=5)
    await _cycle(dut, valid=1, ready=1, payload=6)
    await _cycle(dut, valid=0, ready=0, payload=7)
    for _ in range(4):
        await _cycle(dut, req_a=1, req_b=1)
    await _cycle(dut, req_a=0, req_b=0)
    for _ in range(4):
        await _cycle(dut, resp_valid=1, resp_done=1)
    await _cycle(dut, resp_valid=0, resp_done=0)
    assert _counted(dut) == (0, 0), _counted(dut)

    for rule, broken in (
            (1, [dict(valid=1, ready=0), dict(valid=0, ready=0)]),
            (2, [dict(valid=1, ready=0, payload=1), dict(valid=1, ready=0, payload=2)]),
            (3, [dict(req_a=1, req_b=1)] * 6),
            (4, [dict(resp_valid=1)]),
            # a response needs both requests: one of the pair alone is not enough
            (4, [dict(req_a=1), dict(req_a=0, resp_valid=1)])):
        await _reset(dut)
        for values in broken:
            await _cycle(dut, **values)
        await _cycle(dut, valid=0, ready=0, req_a=0, req_b=0, resp_valid=0, resp_done=0)
        violations, first = _counted(dut)
        assert violations >= 1 and first == rule, (rule, violations, first)
