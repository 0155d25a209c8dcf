"""A cocotb bench of ``tests/test_verilator.py``'s counter (a module the simulator imports:
``tests/`` is on the bench's PYTHONPATH)."""

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
