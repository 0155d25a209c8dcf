"""cocotb benches on ``tests/test_verilator.py``'s counter (a module the simulator imports:
``tests/`` is on the bench's PYTHONPATH): the counter counts, and the top-level bench's limit
on an AXI-Lite transfer fires."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


@cocotb.test()
async def counts(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    for _ in range(10):
        await RisingEdge(dut.clk)
    assert 8 <= int(dut.count.value) <= 10, int(dut.count.value)


@cocotb.test()
async def a_transfer_that_never_ends_fails(dut):
    """``sim.bench_top``'s limit on one AXI-Lite transfer: an answer that never comes fails
    the bench after ``AXIL_TIMEOUT_CYCLES``, with the register named."""
    from cocotb.triggers import Event
    from cocotb.utils import get_sim_time

    from dwsep.sim.bench_top import AXIL_TIMEOUT_CYCLES, CLOCK_NS, within_limit

    t0 = get_sim_time("ns")
    try:
        await within_limit(Event().wait(), "read of STATUS")
    except AssertionError as e:
        assert str(e) == "AXI-Lite read of STATUS: no response in 10,000 cycles", str(e)
        assert get_sim_time("ns") - t0 == AXIL_TIMEOUT_CYCLES * CLOCK_NS
    else:
        raise AssertionError("the transfer did not time out")
