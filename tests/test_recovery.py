"""Every run ends, and the next one is right (issue 12, items 1, 2, 4 and 8), on the Verilated
RTL: bus faults injected by the DDR model (``sim/ddr_model.sv``: an SLVERR on one word), aborts
(``CTRL.abort``) at random cycles and runs past their cycle limit, each followed in the same
simulation by a run that must give the reference backend's DDR image byte for byte.

Several programs are linked side by side in one DDR image and run one after another in one
simulation (the bench's job ``steps``), so a sweep pays the simulator's start-up once per
batch. A *scenario* per program: ``clean`` (one run), ``fault`` (a run with an SLVERR on a
word the program reads or writes: it must stop with AXI_READ or AXI_WRITE, ERROR_ADDR the
first address of the burst holding that word; then a clean run), ``abort`` (``CTRL.abort``
some cycles after the start: it must stop with ABORTED, or be done already; then a clean
run).

Default run: ``tiny``, a few programs of each scenario. ``-m slow``: at least
``SLOW_LAYERS`` random layers on ``pynq-z2`` (drawn as in ``test_sweeps``, each also checked
against LiteRT), under random backpressure on every AXI channel, with faults and aborts.
``-s`` prints the counts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import PYNQ_Z2, TINY, chain, random_int8
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sweeps import SWEEP, layers

from dwsep.host.backends.reference import ReferenceDevice
from dwsep.host.compiler import Program
from dwsep.host.driver import (
    Accelerator,
    AcceleratorTimeout,
    compile_for,
)
from dwsep.host.graph import Graph
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import dwsep_layer_model
from dwsep.hw.config import AcceleratorConfig
from dwsep.hw.layout import (
    DESCRIPTOR,
    REGISTERS,
    ErrorCode,
    descriptor_extents,
    descriptor_products,
)
from dwsep.sim.oracle import litert_run
from dwsep.sim.perf import program_cycles
from dwsep.sim.rtl import simulate
from dwsep.sim.rtl_device import RtlDevice

pytestmark = pytest.mark.verilator

FIRST = 0x1000            #: the first program's address (page 0 stays empty)
WAIT_CYCLES = 5_000_000   #: a run's cycle limit in these jobs (none comes near it)
BURST_BYTES = 16 * 8      #: the longest burst: 16 beats of 8 bytes
SLOW_LAYERS = 100
SLOW_BATCH = 10           #: programs per simulation in the slow sweep
#: multiply-accumulates of a slow-sweep layer: a few thousand cycles on pynq-z2
SLOW_LAYER_MACS = 400_000


def _reg(name: str, **fields) -> int:
    reg = REGISTERS[name]
    return sum(reg.field(f).encode(v) for f, v in fields.items())


@dataclass
class Case:
    """One program linked at ``base`` in the bench's DDR image, with its input written."""
    prog: Program
    base: int
    initial: bytes    #: its region before the first run
    expected: bytes   #: its region after a run on the reference backend
    output: np.ndarray

    def start(self) -> list[list]:
        """The steps that start it: status cleared, program, its window, start."""
        return [["write", "STATUS", _reg("STATUS", done=1, error=1)],
                ["write", "PROGRAM", self.base],
                ["write", "WINDOW_LO", self.base],
                ["write", "WINDOW_HI", self.base + self.prog.size - 1],
                ["write", "CTRL", _reg("CTRL", start=1)]]

    def run(self) -> list[list]:
        """Start, wait for the end, read what it ended with."""
        return [*self.start(), ["wait_idle", WAIT_CYCLES], ["read", "STATUS"],
                ["read", "ERROR"], ["read", "ERROR_ADDR"]]

    def regions(self) -> list[tuple[int, str, int, int]]:
        """``(descriptor, kind, first byte, bytes)`` of every DDR region a run reads
        (``"read"``) or writes (``"write"``: only the stored beats of each output pixel)."""
        out = []
        image = self.initial
        for i in range(len(self.prog.descriptors)):
            d = DESCRIPTOR.unpack(image[i * DESCRIPTOR.size:(i + 1) * DESCRIPTOR.size])
            out.append((i, "read", self.base + i * DESCRIPTOR.size, DESCRIPTOR.size))
            cfg = self.prog.config
            for name, used, nbytes in descriptor_extents(d, descriptor_products(d, cfg), cfg):
                if not used:
                    continue
                if name == "out_addr":
                    pixels = d["out_h"] * d["out_w"]
                    for p in range(pixels):
                        out.append((i, "write", d[name] + 8 * p * d["out_pitch"],
                                    8 * d["out_beats"]))
                else:
                    out.append((i, "read", d[name], nbytes))
        return out


def _cases(cfg: AcceleratorConfig, programs: list[tuple[Graph | bytes, np.ndarray]]
           ) -> tuple[bytearray, list[Case]]:
    """The programs linked one after another (page-aligned) from ``FIRST``, their inputs
    written, and what the reference backend leaves in each region after a run."""
    memory = bytearray(FIRST)
    cases = []
    for model, x in programs:
        g = read_tflite(model) if isinstance(model, bytes) else model
        prog = compile_for(g, cfg)
        base = -(-len(memory) // 4096) * 4096
        ref = ReferenceDevice(cfg, base_address=base)
        buf = ref.alloc(prog.size)
        buf.write(0, prog.link(base))
        buf.write(prog.input.offset, prog.input.pack(x))
        initial = buf.read(0, prog.size)
        case = Case(prog, base, initial, b"", np.empty(0))
        for _, name, value in case.start():
            ref.write_word(REGISTERS[name].offset, value)
        assert ref.read_register("STATUS")["done"], ref.read_register("ERROR")
        case.expected = buf.read(0, prog.size)
        case.output = prog.output.unpack(case.expected[prog.output.offset:][:prog.output.nbytes])
        memory.extend(bytes(base - len(memory)))
        memory.extend(initial)
        cases.append(case)
    return memory, cases


@dataclass
class Scenario:
    kind: str               #: "clean", "fault" or "abort"
    case: Case
    fault: tuple | None = None   #: (descriptor, "read"/"write", word address)
    abort_at: int = 0       #: cycles after the start

    def steps(self) -> list[list]:
        if self.kind == "clean":
            return self.case.run()
        if self.kind == "fault":
            return [["fault", self.fault[2]], *self.case.run(), ["fault", None],
                    *self.case.run()]
        return [*self.case.start(), ["cycles", self.abort_at],
                ["write", "CTRL", _reg("CTRL", abort=1)], ["wait_idle", WAIT_CYCLES],
                ["read", "STATUS"], ["read", "ERROR"], ["read", "ERROR_ADDR"],
                *self.case.run()]

    @property
    def runs(self) -> int:
        return 1 if self.kind == "clean" else 2


def _scenario(kind: str, case: Case, rng: random.Random) -> Scenario:
    if kind == "fault":
        index, rw, first, nbytes = rng.choice(case.regions())
        return Scenario(kind, case, fault=(index, rw, first + 8 * rng.randrange(nbytes // 8)))
    if kind == "abort":
        cycles, _ = program_cycles(case.prog.config, case.prog, base=case.base)
        return Scenario(kind, case, abort_at=rng.randint(1, cycles))
    return Scenario(kind, case)


@dataclass
class Tally:
    runs: int = 0
    faults: int = 0
    aborts: int = 0          #: aborts that found the run going and stopped it
    aborts_late: int = 0     #: aborts written after the run had ended (ignored)
    hangs: int = 0
    mismatches: int = 0


def _run_batch(cfg: AcceleratorConfig, memory: bytearray, scenarios: list[Scenario],
               tally: Tally, **options) -> None:
    """All scenarios in one simulation; checks each one's outcome and final region."""
    steps = [s for sc in scenarios for s in sc.steps()]
    job = simulate(cfg, memory, steps=steps, **options)
    tally.hangs += job.timed_out
    assert not job.timed_out, "a run (or its abort) did not end"
    reads = iter(job.reads)

    def outcome() -> tuple[dict, dict, int]:
        (n1, status), (n2, error), (n3, addr) = next(reads), next(reads), next(reads)
        assert (n1, n2, n3) == ("STATUS", "ERROR", "ERROR_ADDR")
        dec = REGISTERS["STATUS"], REGISTERS["ERROR"]
        return ({f.name: f.decode(status) for f in dec[0].fields},
                {f.name: f.decode(error) for f in dec[1].fields}, addr)

    for sc in scenarios:
        tally.runs += sc.runs
        if sc.kind == "fault":
            status, error, addr = outcome()
            index, rw, word = sc.fault
            want = ErrorCode.AXI_WRITE if rw == "write" else ErrorCode.AXI_READ
            assert status["error"] and not status["busy"], (sc.fault, status)
            assert (ErrorCode(error["code"]), error["layer"] <= index) == (want, True), \
                (sc.fault, error)
            # the burst that got the SLVERR holds the word, within one 4 KiB page
            assert addr <= word < addr + BURST_BYTES and addr // 4096 == word // 4096, \
                (hex(word), hex(addr))
            tally.faults += 1
        elif sc.kind == "abort":
            status, error, _ = outcome()
            assert not status["busy"], status
            if status["error"]:
                assert ErrorCode(error["code"]) == ErrorCode.ABORTED, error
                tally.aborts += 1
            else:
                assert status["done"], status
                tally.aborts_late += 1
        status, error, _ = outcome()
        assert status["done"] and not status["error"] and not status["busy"], (status, error)
        got = bytes(job.memory[sc.case.base:sc.case.base + sc.case.prog.size])
        if got != sc.case.expected:
            tally.mismatches += 1
        assert got == sc.case.expected, (
            f"{sc.kind} scenario: the run after it differs from the reference in "
            f"{sum(a != b for a, b in zip(got, sc.case.expected, strict=True))} bytes")


# ---- default run: tiny ----------------------------------------------------------------------

def _tiny_programs(seed: int, n: int) -> list[tuple[Graph, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = chain(1 + i % 3, seed * 10 + i)
        out.append((g, random_int8(rng, g.input.shape)))
    return out


@pytest.mark.parametrize("seed,backpressure", [(1, False), (2, True)])
def test_faults_and_aborts_then_a_correct_run(seed, backpressure):
    """Per program: a fault on a random word it reads or writes, an abort at a random
    cycle, a clean run: each stops as it should and the run after it is byte-exact."""
    rng = random.Random(seed)
    memory, cases = _cases(TINY, _tiny_programs(seed, 3))
    scenarios = [_scenario(kind, case, rng) for case in cases
                 for kind in ("fault", "abort", "clean")]
    rng.shuffle(scenarios)
    tally = Tally()
    _run_batch(TINY, memory, scenarios, tally,
               backpressure_seed=seed if backpressure else None, p_pause=0.3)
    print(tally)
    assert (tally.faults, tally.aborts + tally.aborts_late, tally.mismatches) == (3, 3, 0)


def test_fault_on_a_write_and_on_the_descriptor():
    """The two kinds of fault the random draws may miss: an SLVERR on an output word
    (AXI_WRITE) and on a descriptor's own beat (AXI_READ at that descriptor)."""
    rng = random.Random(5)
    memory, cases = _cases(TINY, _tiny_programs(5, 2))
    writes = [r for r in cases[0].regions() if r[1] == "write"]
    index, rw, first, nbytes = writes[len(writes) // 2]
    desc = cases[1].regions()[0]
    assert desc[:2] == (0, "read") and desc[2] == cases[1].base
    scenarios = [Scenario("fault", cases[0], fault=(index, rw, first + nbytes - 8)),
                 Scenario("fault", cases[1], fault=(0, "read", desc[2] + 8 * rng.randrange(16)))]
    tally = Tally()
    _run_batch(TINY, memory, scenarios, tally)
    assert (tally.faults, tally.mismatches) == (2, 0)


def test_timeout_aborts_and_the_next_run_is_right():
    """A run past its cycle limit: the bench's abort stops it, the driver raises
    AcceleratorTimeout naming the descriptor and the cycles, and the next run on the same
    Accelerator is bit-exact."""
    g = chain(2, 3)
    x = random_int8(np.random.default_rng(3), g.input.shape)
    ok = Accelerator("tiny", "reference").run(g, x)
    device = RtlDevice("tiny", max_cycles=300)
    acc = Accelerator("tiny", device)
    with pytest.raises(AcceleratorTimeout) as info:
        acc.run(g, x)
    err = info.value
    assert err.stopped and err.cycles is not None and err.cycles >= 300, str(err)
    assert str(err).startswith("rtl: still busy after 300 simulated cycles"), str(err)
    assert f"stopped at descriptor {err.layer} (layer " in str(err), str(err)
    assert str(err).endswith("the run was aborted; the accelerator is ready for the next")
    device.max_cycles = 20_000_000
    assert np.array_equal(acc.run(g, x), ok)


# ---- slow: pynq-z2, random layers, backpressure --------------------------------------------

@pytest.mark.slow
@settings(SWEEP, max_examples=1)
@given(specs=st.lists(layers(PYNQ_Z2, macs=SLOW_LAYER_MACS), min_size=SLOW_LAYERS,
                      max_size=SLOW_LAYERS))
def test_rtl_sweep_with_faults_and_aborts_pynq_z2(specs):
    """``SLOW_LAYERS`` random layers on the pynq-z2 RTL under random backpressure (p = 0.2
    on every AXI and AXI-Lite channel), in batches of ``SLOW_BATCH`` per simulation; a third
    of them get a fault, a third an abort: every stop as it should, every final run
    byte-exact with the reference backend, whose outputs match LiteRT."""
    t0 = time.monotonic()
    rng = random.Random(12)
    tally = Tally()
    for start in range(0, len(specs), SLOW_BATCH):
        batch = specs[start:start + SLOW_BATCH]
        programs = []
        for spec in batch:
            model = dwsep_layer_model(spec)
            x = random_int8(np.random.default_rng(spec.seed), (1, spec.h, spec.w, spec.c))
            programs.append((model, x))
        memory, cases = _cases(PYNQ_Z2, programs)
        for (model, x), case, spec in zip(programs, cases, batch, strict=True):
            np.testing.assert_array_equal(case.output.reshape(-1),
                                          litert_run(model, x).reshape(-1), err_msg=str(spec))
        kinds = ["clean", "fault", "abort"]
        scenarios = [_scenario(kinds[(start + i) % 3], case, rng)
                     for i, case in enumerate(cases)]
        _run_batch(PYNQ_Z2, memory, scenarios, tally, backpressure_seed=start + 1,
                   p_pause=0.2)
    print(f"\n{len(specs)} layers, {tally}, {time.monotonic() - t0:.0f} s")
    assert tally.mismatches == tally.hangs == 0
    assert tally.faults >= len(specs) // 3 and tally.aborts >= len(specs) // 4
