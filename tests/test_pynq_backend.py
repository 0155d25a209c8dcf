"""The pynq backend through a fake ``pynq`` module: the real PynqDevice code (DefaultIP
subclass bound by VLNV, MMIO by register name, ``pynq.allocate`` buffers with flush and
invalidate) drives a fake board whose registers and DDR are a ReferenceDevice. The fake keeps
the CPU's view of each buffer apart from the device's, so a missing flush or invalidate gives
wrong results."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from dwsep.host.backends.pynq import VLNV, PynqDevice
from dwsep.host.backends.reference import ReferenceDevice, ReferenceMemory
from dwsep.host.driver import Accelerator, BackendUnavailableError, CapabilityMismatchError
from dwsep.host.tflite_writer import (
    BlockSpec,
    MobileNetSpec,
    dwsep_layer_model,
    mobilenet_like_model,
    random_layer_spec,
)
from dwsep.hw.layout import REGISTERS
from dwsep.sim.oracle import litert_run


class FakeBoard:
    """Registers and DDR of a board running the accelerator built for ``config``; ``log``
    records flushes, invalidates and register writes in order."""

    def __init__(self, config: str):
        self.memory = ReferenceMemory()
        self.accel = ReferenceDevice(config, memory=self.memory)
        self.log: list[tuple] = []
        self.next_addr = 0x3000_0000
        self.loaded: list[str] = []

    def module(self) -> types.ModuleType:
        """A ``pynq`` module whose Overlay, DefaultIP and allocate reach this board."""
        board = self
        pynq = types.ModuleType("pynq")

        class MMIO:
            def __init__(self, base_addr: int, length: int):
                self.base_addr, self.length = base_addr, length

            def read(self, offset: int = 0, length: int = 4) -> int:
                assert length == 4 and 0 <= offset < self.length and offset % 4 == 0
                return board.accel.read_word(offset)

            def write(self, offset: int, value: int) -> None:
                assert 0 <= offset < self.length and offset % 4 == 0
                assert isinstance(value, int) and 0 <= value < 1 << 32
                board.log.append(("write", offset, value))
                board.accel.write_word(offset, value)

        class DefaultIP:
            drivers: dict[str, type] = {}

            def __init_subclass__(cls, **kwargs):
                super().__init_subclass__(**kwargs)
                for vlnv in getattr(cls, "bindto", []):
                    DefaultIP.drivers[vlnv] = cls

            def __init__(self, description: dict):
                self.mmio = MMIO(description["phys_addr"], description["addr_range"])

            def read(self, offset: int = 0) -> int:
                return self.mmio.read(offset)

            def write(self, offset: int, value: int) -> None:
                self.mmio.write(offset, value)

        class Overlay:
            def __init__(self, bitfile_name: str):
                board.loaded.append(bitfile_name)
                self.ip_dict = {
                    "processing_system7_0": {"type": "xilinx.com:ip:processing_system7:5.5",
                                             "phys_addr": 0, "addr_range": 0},
                    "dwsep_0": {"type": VLNV, "phys_addr": 0x4000_0000, "addr_range": 0x1000},
                }

            def __getattr__(self, name: str):
                if name not in self.__dict__.get("ip_dict", {}):
                    raise AttributeError(name)
                desc = self.ip_dict[name]
                return DefaultIP.drivers.get(desc["type"], DefaultIP)(description=desc)

        class PynqBuffer(np.ndarray):
            def flush(self):
                board.log.append(("flush", self.physical_address))
                self.device_copy[:] = self.view(np.ndarray).tobytes()

            def invalidate(self):
                board.log.append(("invalidate", self.physical_address))
                self.view(np.ndarray)[:] = np.frombuffer(bytes(self.device_copy), self.dtype)

            def freebuffer(self):
                board.memory.unmap(self.physical_address)

        def allocate(shape, dtype=np.uint32):
            cpu = np.zeros(shape, dtype).view(PynqBuffer)
            cpu.physical_address = board.next_addr
            cpu.device_copy = bytearray(cpu.nbytes)
            board.memory.map(board.next_addr, cpu.device_copy)
            board.next_addr += -(-cpu.nbytes // 4096) * 4096
            return cpu

        pynq.MMIO, pynq.DefaultIP, pynq.Overlay, pynq.allocate = MMIO, DefaultIP, Overlay, allocate
        return pynq


@pytest.fixture
def board(monkeypatch):
    b = FakeBoard("tiny")
    monkeypatch.setitem(sys.modules, "pynq", b.module())
    return b


@pytest.mark.parametrize("seed", range(4))
def test_runs_through_fake_board(board, seed):
    spec = random_layer_spec(np.random.default_rng(seed), max_hw=12, max_c=20, max_c_out=20)
    model = dwsep_layer_model(spec)
    x = np.random.default_rng(seed).integers(-128, 128, (1, spec.h, spec.w, spec.c),
                                             dtype=np.int8)
    with Accelerator("tiny", "pynq", bitstream="dwsep.bit") as acc:
        assert isinstance(acc.device, PynqDevice)
        assert type(acc.device.ip).bindto == [VLNV]
        y = acc.run(model, x)
        assert acc.last_stats["backend"] == "pynq"
    assert board.loaded == ["dwsep.bit"]
    assert np.array_equal(y, litert_run(model, x)), spec

    # The program is flushed before the start and the output invalidated after it.
    start = ("write", REGISTERS["CTRL"].offset, 1)
    i = board.log.index(start)
    assert any(e[0] == "flush" for e in board.log[:i])
    assert any(e[0] == "invalidate" for e in board.log[i:])


def test_whole_network_with_host_step(board):
    """A MobileNet-like network: many descriptors, and the FC host step reads the RAW_OUT
    sums through the CPU's view of the buffer (invalidated after the run)."""
    spec = MobileNetSpec(h=12, w=10, stem_channels=8, blocks=(BlockSpec(3, 8, 1),
                                                              BlockSpec(2, 12, 2)),
                         head_channels=20, pool="AVERAGE_POOL_2D", keep_dims=True,
                         classes=9, fc_per_channel=False, reshape=True, seed=2)
    model = mobilenet_like_model(spec)
    x = np.random.default_rng(2).integers(-128, 128, (1, 12, 10, 3), dtype=np.int8)
    with Accelerator("tiny", "pynq", bitstream="dwsep.bit") as acc:
        y = acc.run(model, x)
        assert acc.last_stats["host_steps"][0]["kind"] == "fc_requant"
        assert acc.last_stats["descriptor_count"] == 5
    assert np.array_equal(y, litert_run(model, x))


def test_existing_overlay_and_second_run(board):
    spec = random_layer_spec(np.random.default_rng(9), max_hw=8, max_c=12, max_c_out=12)
    model = dwsep_layer_model(spec)
    overlay = sys.modules["pynq"].Overlay("preloaded.bit")
    acc = Accelerator("tiny", "pynq", overlay=overlay)
    rng = np.random.default_rng(1)
    for _ in range(2):  # the second run rewrites only the input
        x = rng.integers(-128, 128, (1, spec.h, spec.w, spec.c), dtype=np.int8)
        assert np.array_equal(acc.run(model, x), litert_run(model, x))
    acc.close()
    assert board.loaded == ["preloaded.bit"]


def test_capability_mismatch(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynq", FakeBoard("pynq-z2").module())
    with pytest.raises(CapabilityMismatchError, match=r"CAP_ARRAY\.dw_lanes: the pynq device "
                                                      r"reads 0x10, config 'tiny' expects 0x8"):
        Accelerator("tiny", "pynq", bitstream="dwsep.bit")


def test_needs_bitstream_or_overlay(board):
    with pytest.raises(BackendUnavailableError, match="needs bitstream="):
        Accelerator("tiny", "pynq")


def test_overlay_without_dwsep_ip(board):
    overlay = sys.modules["pynq"].Overlay("other.bit")
    del overlay.ip_dict["dwsep_0"]
    with pytest.raises(BackendUnavailableError,
                       match=f"the overlay has no IP of type {VLNV}; its IPs: "
                             "processing_system7_0"):
        PynqDevice("tiny", overlay=overlay)


def test_pynq_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynq", None)  # import pynq -> ImportError
    with pytest.raises(BackendUnavailableError) as info:
        Accelerator("tiny", "pynq", bitstream="dwsep.bit")
    assert str(info.value) == ("the pynq backend needs the 'pynq' package (a PYNQ board image "
                               "has it): pip install 'dwsep[pynq]'")
