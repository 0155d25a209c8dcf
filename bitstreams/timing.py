"""Logic depth between registers in a Yosys ``synth_xilinx`` netlist: the timing estimate.

No Vivado here, so no static timing analysis with real delays. What the mapped netlist does
tell is how much logic each register-to-register path crosses; the issue's target is at most
6 LUT levels between registers on the xc7. :func:`analyze` reads the hierarchical netlist
(Yosys ``write_json``), flattens it in Python (cell and net names keep their instance path,
e.g. ``engine``), builds a graph over net bits and runs a longest-path DP in topological
order from every start point to every end point.

The cell models (7-series primitives as Yosys 0.70 maps them):

* **Start and end points.** FFs (``FDRE/FDSE/FDCE/FDPE``, latches ``LDCE/LDPE``): ``Q`` starts
  a path; ``D``, ``CE`` and the set/reset pins end one. Top-level input ports start paths and
  output ports end them (the AXI interconnect registers them in the block design).
* **LUT levels.** ``LUT1``-``LUT6``: one level each. ``INV``: no level (Vivado folds an
  inverter into the LUT it drives or into the ``IS_*_INVERTED`` pin attribute of the FF, DSP
  or BRAM it drives). ``MUXF7``/``MUXF8``: no LUT level, counted separately (``muxf``): they
  combine LUTs of the same slice, about a fifth of a level each.
* **Carry chains.** ``CARRY4``: counted per cell in series (``carry4``), not as LUT levels; a
  path may enter at any bit (``S``/``DI``) and leaves at ``O``/``CO`` of that bit or a later
  one. Bit-accurate arcs, so a LUT from ``O[0]`` back into ``S[3]`` is not a loop. For
  ``--part xczu7ev`` Yosys 0.70 also maps to ``CARRY4`` (a ``CARRY8``, if present, counts as
  one cell); the ``*E2`` DSP and block RAM primitives follow the rules of the ``*E1`` ones.
* **DSP48E1.** Its registers cut paths only where the cell's parameters enable them:
  ``AREG/BREG/DREG/INMODEREG`` (multiplier inputs), ``MREG`` (product), ``CREG`` and the ALU
  control registers (ALU inputs), ``PREG`` (outputs). Where a register is off, the section
  is combinational; a combinational multiplier costs :data:`DSP_MULT_LEVELS` and the ALU
  :data:`DSP_ALU_LEVELS` LUT-level equivalents in the weighted ranking (zero in the LUT-level
  ranking: a path through them still counts the LUTs on both sides). ``PCOUT -> PCIN``
  cascades are followed like any other net.
* **Block RAM** (``RAMB18E1/RAMB36E1``): reads are synchronous, so every output starts a
  path and every input ends one. Without the output register (``DOA_REG``/``DOB_REG`` = 0,
  Yosys' usual mapping) the clock-to-out is slow (about 2 ns on a -1 part against 0.5 ns for
  a FF): :data:`BRAM_OUT_LEVELS` LUT-level equivalents in the weighted ranking.
* **LUTRAM and SRL** (``RAM32M``, ``RAM64M``, ``RAM*X1S/D``, ``SRL16E``, ``SRLC32E``): writes
  are synchronous (data, write enable and write address end paths), reads asynchronous: a
  read address reaches the data output through one LUT level; the outputs also start paths
  (the stored value changes on the clock).

Two rankings come out of one graph: **LUT levels** (the issue's metric; ties broken by
carry length, then MUXF count) and **weighted levels** (LUT levels plus the equivalents
above), which is closer to which path Vivado would report as critical. One LUT level on a -1
7-series part is about 0.5 ns with local routing; the equivalents are rounded from that.
A combinational loop is an error (:class:`CombinationalLoopError`) naming its cells.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict, deque
from dataclasses import asdict, dataclass

__all__ = ["BRAM_OUT_LEVELS", "DSP_ALU_LEVELS", "DSP_MULT_LEVELS", "CombinationalLoopError",
           "Path", "Ranking", "Timing", "analyze", "format_timing"]

#: LUT-level equivalent of a combinational DSP48E1 multiplier (inputs to M, ~2 ns).
DSP_MULT_LEVELS = 4
#: LUT-level equivalent of a combinational DSP48E1 ALU (M/C/PCIN to P, ~1.5 ns).
DSP_ALU_LEVELS = 3
#: Extra clock-to-out of a block RAM read without its output register (~1.6 ns over a FF).
BRAM_OUT_LEVELS = 3


class CombinationalLoopError(ValueError):
    """The netlist has a path from a net back to itself with no register on it."""


# Edge kinds and what each adds to (lut, carry4, muxf, dsp sections, weighted extra).
_NONE, _LUT, _CARRY, _MUXF, _DSP_MULT, _DSP_ALU, _BRAM_OUT = range(7)
_ADDS = {
    _NONE: (0, 0, 0, 0, 0), _LUT: (1, 0, 0, 0, 0), _CARRY: (0, 1, 0, 0, 0),
    _MUXF: (0, 0, 1, 0, 0), _DSP_MULT: (0, 0, 0, 1, DSP_MULT_LEVELS),
    _DSP_ALU: (0, 0, 0, 1, DSP_ALU_LEVELS), _BRAM_OUT: (0, 0, 0, 0, BRAM_OUT_LEVELS),
}
#: Key increments of each ranking: (primary levels, carry4, muxf).
_RANK_ADDS = {
    "lut": {k: (lut, carry, muxf) for k, (lut, carry, muxf, _, _) in _ADDS.items()},
    "weighted": {k: (lut + extra, carry, muxf)
                 for k, (lut, carry, muxf, _, extra) in _ADDS.items()},
}

_FFS = {"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"}
_FF_INPUTS = {"D", "CE", "R", "S", "CLR", "PRE", "GE", "G"}
_LUTS = {f"LUT{n}" for n in range(1, 7)}
_CARRIES = {"CARRY4", "CARRY8"}
_DSPS = {"DSP48E1", "DSP48E2"}
_BRAMS = {"RAMB18E1", "RAMB36E1", "RAMB18E2", "RAMB36E2"}
_SRLS = {"SRL16E", "SRLC16E", "SRLC32E"}
_LUTRAM = re.compile(r"RAM(16|32|64|128|256)(X1[SD]|M\d*)$")
#: DSP48E1 inputs of the multiplier section and the register that captures each.
_DSP_MULT_IN = {"A": "AREG", "ACIN": "AREG", "B": "BREG", "BCIN": "BREG", "D": "DREG",
                "INMODE": "INMODEREG"}
#: DSP48E1 inputs of the ALU section and their register (None: never registered).
_DSP_ALU_IN = {"C": "CREG", "PCIN": None, "CARRYIN": "CARRYINREG", "CARRYCASCIN": None,
               "MULTSIGNIN": None, "OPMODE": "OPMODEREG", "ALUMODE": "ALUMODEREG",
               "CARRYINSEL": "CARRYINSELREG"}


@dataclass
class _Cell:
    path: str         #: instance path of the module holding it ('' for the top)
    module: str       #: that module's name in the netlist
    name: str
    type: str
    params: dict
    dirs: dict        #: port -> "input" / "output"
    conns: dict       #: port -> [global net id, or None for a constant]
    local: dict       #: port -> [the module's own bit ids]


@dataclass(frozen=True)
class _Point:
    """A start or end point: which cell, which pin, and the net that names it."""
    cell: int         #: index into the cell list, -1 for a top-level port
    pin: str
    net: tuple        #: (module name, local bit) or ("port", name) for naming


@dataclass(frozen=True)
class Path:
    """The deepest path into one end point (or the worst bit of one register)."""
    levels: int       #: ranking key: LUT levels, plus the equivalents in a weighted ranking
    lut_levels: int
    carry4: int
    muxf: int
    dsp: int          #: combinational DSP48 sections crossed
    start: str
    start_module: str
    end: str
    end_module: str
    cells: str        #: the cell types along the path, e.g. ``FDRE LUT6 CARRY4x3 LUT3 FDRE``
    through: str      #: the modules it crosses, in order, e.g. ``writer > dwsep_top > csr``

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Ranking:
    """The worst paths under one ranking: overall, the ``n`` worst end registers, and the
    worst per module (by end point)."""
    name: str
    worst: Path
    paths: list[Path]
    modules: dict[str, Path]

    def to_dict(self) -> dict:
        return {**self.worst.to_dict(), "paths": [p.to_dict() for p in self.paths],
                "modules": {m: p.to_dict() for m, p in self.modules.items()}}


@dataclass(frozen=True)
class Timing:
    """Both rankings of one netlist and its size."""
    lut: Ranking
    weighted: Ranking
    endpoints: int
    cells: int

    def to_dict(self) -> dict:
        """The ``timing`` object of ``dwsep synth --json``: the LUT-level ranking at the
        top level, the weighted one under ``weighted``."""
        return {**self.lut.to_dict(), "weighted": self.weighted.to_dict(),
                "endpoint_count": self.endpoints, "cell_count": self.cells,
                "model": {"dsp_mult_levels": DSP_MULT_LEVELS, "dsp_alu_levels": DSP_ALU_LEVELS,
                          "bram_out_levels": BRAM_OUT_LEVELS}}


# ---- flattening ---------------------------------------------------------------------------

def _flatten(netlist: dict, top: str) -> tuple[list[_Cell], dict[str, dict]]:
    """Every library cell of ``top`` and below, with nets numbered across the hierarchy;
    and the top module's ports with their global net ids."""
    modules = {name: m for name, m in netlist["modules"].items()
               if not int(m.get("attributes", {}).get("blackbox", "0") or "0", 2)}
    if top not in modules:
        raise ValueError(f"top module {top!r} not in the netlist; modules: "
                         f"{', '.join(sorted(modules))}")
    blackbox_dirs = {name: {p: d["direction"] for p, d in m.get("ports", {}).items()}
                     for name, m in netlist["modules"].items() if name not in modules}
    counter = itertools.count()
    cells: list[_Cell] = []

    def visit(name: str, path: str, bitmap: dict) -> None:
        def glob(bit):
            return None if isinstance(bit, str) else bitmap.setdefault(bit, next(counter))

        for cname, c in modules[name]["cells"].items():
            conns = {port: [glob(b) for b in bits] for port, bits in c["connections"].items()}
            if c["type"] in modules:
                sub = modules[c["type"]]["ports"]
                inner = {local: g for port, bits in conns.items()
                         for local, g in zip(sub[port]["bits"], bits, strict=True)
                         if g is not None and not isinstance(local, str)}
                visit(c["type"], f"{path}.{cname}" if path else cname, inner)
            else:
                dirs = c.get("port_directions") or blackbox_dirs.get(c["type"], {})
                cells.append(_Cell(path, name, cname, c["type"], c.get("parameters", {}),
                                   dirs, conns, c["connections"]))

    top_bits: dict = {}
    visit(top, "", top_bits)
    ports = {pname: {"direction": p["direction"],
                     "nets": [None if isinstance(b, str) else top_bits.get(b) for b in p["bits"]]}
             for pname, p in modules[top]["ports"].items()}
    return cells, ports


def _param(cell: _Cell, name: str, default: int = 1) -> int:
    value = cell.params.get(name)
    if value is None:
        return default
    value = str(value).strip()
    if value and set(value) <= set("01xz"):
        return int(value.replace("x", "0").replace("z", "0"), 2)
    return int(value) if value.lstrip("-").isdigit() else default


# ---- the graph ------------------------------------------------------------------------------

class _Graph:
    """Nodes are net bits (global ids) and a few virtual nodes inside hard blocks; edges carry
    a kind (what the hop adds) and the cell they cross."""

    def __init__(self, first_virtual: int):
        self.succ: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        self.starts: dict[int, tuple[int, _Point]] = {}
        self.ends: list[tuple[int, _Point]] = []
        self._next = itertools.count(first_virtual)

    def virtual(self) -> int:
        return next(self._next)

    def edge(self, src, dst, kind: int, cell: int) -> None:
        if src is not None and dst is not None:
            self.succ[src].append((dst, kind, cell))

    def start(self, node, point: _Point, kind: int = _NONE) -> None:
        if node is not None:
            self.starts[node] = (kind, point)

    def end(self, node, point: _Point) -> None:
        if node is not None:
            self.ends.append((node, point))


def _bits(cell: _Cell, port: str) -> list:
    return cell.conns.get(port, [])


def _inputs(cell: _Cell):
    for port, nets in cell.conns.items():
        if cell.dirs.get(port) == "input":
            for i, net in enumerate(nets):
                if net is not None:
                    yield port, i, net


def _outputs(cell: _Cell):
    for port, nets in cell.conns.items():
        if cell.dirs.get(port) == "output":
            for i, net in enumerate(nets):
                if net is not None:
                    yield port, i, net


def _point(cell: _Cell, index: int, port: str, i: int) -> _Point:
    local = cell.local[port][i]
    return _Point(index, f"{port}[{i}]" if len(cell.local[port]) > 1 else port,
                  (cell.module, local))


def _add_ff(g: _Graph, c: _Cell, k: int) -> None:
    q = _bits(c, "Q")
    qpoint = _point(c, k, "Q", 0) if q else _Point(k, "Q", ("", None))
    g.start(q[0] if q else None, qpoint)
    for port, _, net in _inputs(c):
        if port in _FF_INPUTS:
            g.end(net, qpoint)  # the register is named by its output net


def _add_carry(g: _Graph, c: _Cell, k: int) -> None:
    stages = [g.virtual() for _ in range(4 if c.type == "CARRY4" else 8)]
    for n in ("CI", "CYINIT"):
        for net in _bits(c, n):
            g.edge(net, stages[0], _CARRY, k)
    for net in _bits(c, "CI_TOP"):  # CARRY8 split into two 4-bit chains
        g.edge(net, stages[4], _CARRY, k)
    for i, stage in enumerate(stages):
        if i:
            g.edge(stages[i - 1], stage, _NONE, k)
        for n in ("S", "DI"):
            bits = _bits(c, n)
            if i < len(bits):
                g.edge(bits[i], stage, _CARRY, k)
        for n in ("O", "CO"):
            bits = _bits(c, n)
            if i < len(bits):
                g.edge(stage, bits[i], _NONE, k)


def _add_dsp(g: _Graph, c: _Cell, k: int) -> None:
    use_mult = str(c.params.get("USE_MULT", "MULTIPLY")).strip() != "NONE"
    use_dport = str(c.params.get("USE_DPORT", "FALSE")).strip() == "TRUE"
    adreg = use_dport and _param(c, "ADREG") > 0
    mult_in, alu_in, alu_out = g.virtual(), g.virtual(), g.virtual()
    first_out = next(((p, i) for p, i, _ in _outputs(c) if p == "P"), None)
    label = _point(c, k, *first_out) if first_out else _Point(k, "", ("", None))

    def reg_point(reg: str) -> _Point:
        return _Point(k, reg, label.net)

    for port, _, net in _inputs(c):
        if port in _DSP_MULT_IN:
            reg = _DSP_MULT_IN[port]
            registered = _param(c, reg) > 0 or (adreg and port in ("A", "D"))
            if registered:
                g.end(net, reg_point(reg))
                g.start(mult_in, reg_point(reg))
            else:
                g.edge(net, mult_in, _NONE, k)
        elif port in _DSP_ALU_IN:
            reg = _DSP_ALU_IN[port]
            if reg is not None and _param(c, reg) > 0:
                g.end(net, reg_point(reg))
                g.start(alu_in, reg_point(reg))
            else:
                g.edge(net, alu_in, _NONE, k)
        elif port.startswith(("CE", "RST")):
            g.end(net, reg_point(port))
    if not use_mult:
        g.edge(mult_in, alu_in, _NONE, k)
    elif _param(c, "MREG") > 0:
        g.end(mult_in, reg_point("MREG"))
        g.start(alu_in, reg_point("MREG"))
    else:
        g.edge(mult_in, alu_in, _DSP_MULT, k)
    preg = _param(c, "PREG") > 0
    if preg:
        g.end(alu_in, reg_point("PREG"))
    else:
        g.edge(alu_in, alu_out, _DSP_ALU, k)
    for port, i, net in _outputs(c):
        if port in ("ACOUT", "BCOUT"):
            reg = "AREG" if port == "ACOUT" else "BREG"
            if _param(c, reg) > 0:
                g.start(net, reg_point(reg))
            else:
                g.edge(mult_in, net, _NONE, k)
        elif preg:
            g.start(net, _point(c, k, port, i))
        else:
            g.edge(alu_out, net, _NONE, k)


def _add_bram(g: _Graph, c: _Cell, k: int) -> None:
    for port, i, net in _outputs(c):
        side = "B" if port.startswith(("DOB", "DOPB", "DOUTB", "DOUTPB")) else "A"
        unregistered = _param(c, f"DO{side}_REG", 0) == 0
        g.start(net, _point(c, k, port, i), _BRAM_OUT if unregistered else _NONE)
    first = next(((p, i) for p, i, _ in _outputs(c)), None)
    label = _point(c, k, *first) if first else _Point(k, "", ("", None))
    for port, _, net in _inputs(c):
        if not port.startswith("CLK"):
            g.end(net, _Point(k, port, label.net))


def _lutram_reads(c: _Cell) -> dict[str, str]:
    """Read address port -> data output port of a LUTRAM or SRL."""
    if c.type in _SRLS:  # SRLC32E has an address bus A, SRL16E pins A0..A3
        return {a: "Q" for a in ("A", "A0", "A1", "A2", "A3")}
    if "X1" not in c.type:  # RAM32M, RAM64M, RAM64M8: ADDRA -> DOA, ...
        return {p: "DO" + p[-1] for p in c.conns if p.startswith("ADDR")}
    reads = {"DPRA": "DPO", "A": "SPO" if "SPO" in c.conns else "O"}
    reads.update({f"DPRA{i}": "DPO" for i in range(8)})
    reads.update({f"A{i}": reads["A"] for i in range(8)})
    return reads


def _add_lutram(g: _Graph, c: _Cell, k: int) -> None:
    reads = _lutram_reads(c)
    write_addr = max((p for p in c.conns if p.startswith("ADDR")), default=None)
    for port, i, net in _outputs(c):
        g.start(net, _point(c, k, port, i))
    first = next(((p, i) for p, i, _ in _outputs(c)), None)
    label = _point(c, k, *first) if first else _Point(k, "", ("", None))
    for port, _, net in _inputs(c):
        if port in reads:
            for out in _bits(c, reads[port]):
                g.edge(net, out, _LUT, k)
        read_only = port.startswith("DPRA") or (port in reads and port.startswith("ADDR")
                                                 and port != write_addr)
        is_srl_addr = c.type in _SRLS and port in reads
        if not (read_only or is_srl_addr or port.startswith(("CLK", "WCLK"))):
            g.end(net, _Point(k, port, label.net))


def _add_comb(g: _Graph, c: _Cell, k: int, kind: int) -> None:
    outs = [net for _, _, net in _outputs(c)]
    for _, _, net in _inputs(c):
        for out in outs:
            g.edge(net, out, kind, k)


def _build(cells: list[_Cell], ports: dict, first_virtual: int) -> _Graph:
    g = _Graph(first_virtual)
    unknown = set()
    for k, c in enumerate(cells):
        t = c.type
        if t in _LUTS:
            _add_comb(g, c, k, _LUT)
        elif t == "INV":
            _add_comb(g, c, k, _NONE)
        elif t in ("MUXF7", "MUXF8"):
            _add_comb(g, c, k, _MUXF)
        elif t in _CARRIES:
            _add_carry(g, c, k)
        elif t in _FFS:
            _add_ff(g, c, k)
        elif t in _DSPS:
            _add_dsp(g, c, k)
        elif t in _BRAMS:
            _add_bram(g, c, k)
        elif t in _SRLS or _LUTRAM.match(t):
            _add_lutram(g, c, k)
        elif t in ("GND", "VCC"):
            continue
        else:
            unknown.add(t)
    if unknown:
        raise ValueError(f"no timing model for cell type(s) {', '.join(sorted(unknown))}; "
                         f"add them to dwsep.bitstreams.timing")
    for name, port in ports.items():
        for i, net in enumerate(port["nets"]):
            point = _Point(-1, f"{name}[{i}]" if len(port["nets"]) > 1 else name,
                           ("port", name))
            if port["direction"] == "input" and name != "clk":
                g.start(net, point)
            elif port["direction"] == "output":
                g.end(net, point)
    return g


# ---- longest paths --------------------------------------------------------------------------

def _order(g: _Graph, cells: list[_Cell]) -> list[int]:
    """Nodes in topological order (Kahn); a loop raises :class:`CombinationalLoopError`."""
    indegree: dict[int, int] = defaultdict(int)
    for edges in g.succ.values():
        for dst, _, _ in edges:
            indegree[dst] += 1
    nodes = set(g.succ) | set(indegree)
    queue = deque(n for n in nodes if indegree[n] == 0)
    order = []
    while queue:
        n = queue.popleft()
        order.append(n)
        for dst, _, _ in g.succ.get(n, ()):
            indegree[dst] -= 1
            if indegree[dst] == 0:
                queue.append(dst)
    if len(order) < len(nodes):
        raise CombinationalLoopError(_describe_loop(g, cells, {n for n in nodes
                                                              if indegree[n] > 0}))
    return order


def _describe_loop(g: _Graph, cells: list[_Cell], stuck: set[int]) -> str:
    """One loop among the nodes Kahn's algorithm could not order, as its cells."""
    node, seen, trail = next(iter(stuck)), {}, []
    while node not in seen:
        seen[node] = len(trail)
        dst, _, cell = next(e for e in g.succ.get(node, ()) if e[0] in stuck)
        trail.append(cell)
        node = dst
    loop = trail[seen[node]:]
    names = [f"{_module_name(cells[k])}.{cells[k].name} ({cells[k].type})" for k in loop]
    names = list(dict.fromkeys(names))
    return (f"combinational loop through {len(names)} cell(s): {' -> '.join(names[:8])}"
            f"{' -> ...' if len(names) > 8 else ''}")


def _longest(g: _Graph, order: list[int], adds: dict) -> tuple[dict, dict]:
    """Arrival key and predecessor ``(node, kind, cell)`` of every reached node."""
    arrival: dict[int, tuple] = {}
    pred: dict[int, tuple] = {}
    for node, (kind, _) in g.starts.items():
        arrival[node] = adds[kind]
    for node in order:
        key = arrival.get(node)
        if key is None:
            continue
        for dst, kind, cell in g.succ.get(node, ()):
            a = adds[kind]
            cand = (key[0] + a[0], key[1] + a[1], key[2] + a[2])
            if cand > arrival.get(dst, (-1,)):
                arrival[dst] = cand
                pred[dst] = (node, kind, cell)
    return arrival, pred


# ---- reporting ------------------------------------------------------------------------------

def _module_name(cell: _Cell, top: str = "dwsep_top") -> str:
    return cell.path or top


class _Names:
    """Readable net names: the public name of a bit, or the shortest private one."""

    def __init__(self, netlist: dict):
        self.netlist = netlist
        self._maps: dict[str, dict] = {}

    def net(self, module: str, bit) -> str:
        if module == "port":
            return bit
        if module not in self._maps:
            best: dict = {}
            for name, n in self.netlist["modules"][module]["netnames"].items():
                rank = (bool(n.get("hide_name")), len(name))
                for i, b in enumerate(n["bits"]):
                    label = f"{name}[{i + n.get('offset', 0)}]" if len(n["bits"]) > 1 else name
                    if not isinstance(b, str) and (b not in best or rank < best[b][0]):
                        best[b] = (rank, label)
            self._maps[module] = {b: label for b, (_, label) in best.items()}
        return self._maps[module].get(bit, "?")


def _describe(point: _Point, cells: list[_Cell], names: _Names, top: str) -> tuple[str, str]:
    """(name, module) of a start or end point."""
    if point.cell < 0:
        return f"port {point.pin}", top
    c = cells[point.cell]
    module = _module_name(c, top)
    net = names.net(*point.net) if point.net[1] is not None else c.name
    if c.type in _FFS:
        return net, module
    return f"{net} ({c.type} {point.pin})", module


def _trace(node: int, pred: dict, cells: list[_Cell], g: _Graph, end: _Point
           ) -> tuple[list[int], _Point, list[int]]:
    """The kinds and cells along the best path into ``node``, and its start point."""
    kinds, path_cells = [], [end.cell]
    while node in pred:
        node, kind, cell = pred[node]
        kinds.append(kind)
        if path_cells[-1] != cell:
            path_cells.append(cell)
    start_kind, start = g.starts[node]
    kinds.append(start_kind)
    if path_cells[-1] != start.cell:
        path_cells.append(start.cell)
    return kinds, start, path_cells[::-1]


def _cell_chain(path_cells: list[int], cells: list[_Cell]) -> str:
    types = ["port" if k < 0 else cells[k].type for k in path_cells]
    runs = [(t, len(list(grp))) for t, grp in itertools.groupby(types)]
    return " ".join(f"{t}x{n}" if n > 1 else t for t, n in runs)


def _make_path(key: tuple, kinds: list[int], start: _Point, end: _Point,
               path_cells: list[int], cells: list[_Cell], names: _Names, top: str) -> Path:
    sums = [sum(_ADDS[k][i] for k in kinds) for i in range(5)]
    start_name, start_module = _describe(start, cells, names, top)
    end_name, end_module = _describe(end, cells, names, top)
    modules = [top if k < 0 else _module_name(cells[k], top) for k in path_cells]
    return Path(levels=key[0], lut_levels=sums[0], carry4=sums[1], muxf=sums[2], dsp=sums[3],
                start=start_name, start_module=start_module, end=end_name,
                end_module=end_module, cells=_cell_chain(path_cells, cells),
                through=" > ".join(m for m, _ in itertools.groupby(modules)))


def _rank(name: str, g: _Graph, order: list[int], cells: list[_Cell], names: _Names,
          top: str, n_paths: int) -> Ranking:
    arrival, pred = _longest(g, order, _RANK_ADDS[name])
    # One entry per end register (its worst bit); ties keep the first end point.
    best: dict[tuple, tuple] = {}
    for node, point in g.ends:
        key = arrival.get(node)
        if key is None:
            continue
        name_key, module = _describe(point, cells, names, top)
        if point.cell >= 0 and cells[point.cell].type not in _FFS:
            # All pins of one kind on a module's hard blocks (e.g. every DSP's CEM) are one
            # entry: they are usually the fanout of one stall or address signal.
            name_key = f"{cells[point.cell].type} {point.pin}"
        group = (re.sub(r"\[\d+\]", "", name_key), module)
        if group not in best or key > best[group][0]:
            best[group] = (key, node, point)
    if not best:
        raise ValueError("the netlist has no register-to-register path")
    ranked = sorted(best.values(), key=lambda e: e[0], reverse=True)

    def path(entry) -> Path:
        key, node, point = entry
        kinds, start, path_cells = _trace(node, pred, cells, g, point)
        return _make_path(key, kinds, start, point, path_cells, cells, names, top)

    paths = [path(e) for e in ranked[:max(1, n_paths)]]
    per_module: dict[str, tuple] = {}
    for entry in ranked:
        module = _describe(entry[2], cells, names, top)[1]
        per_module.setdefault(module, entry)
    modules = {m: path(e) for m, e in sorted(per_module.items(),
                                             key=lambda me: me[1][0], reverse=True)}
    return Ranking(name, paths[0], paths[:n_paths], modules)


def analyze(netlist: dict, top: str = "dwsep_top", n_paths: int = 10) -> Timing:
    """Both rankings of the register-to-register paths of ``netlist`` (Yosys ``write_json``
    output, hierarchical or flat) below module ``top``; ``n_paths`` worst end registers."""
    cells, ports = _flatten(netlist, top)
    first_virtual = 1 + max((n for c in cells for nets in c.conns.values() for n in nets
                             if n is not None), default=0)
    g = _build(cells, ports, first_virtual)
    order = _order(g, cells)
    names = _Names(netlist)
    return Timing(lut=_rank("lut", g, order, cells, names, top, n_paths),
                  weighted=_rank("weighted", g, order, cells, names, top, n_paths),
                  endpoints=len(g.ends), cells=len(cells))


def _path_line(p: Path, weighted: bool) -> str:
    extra = f"{p.levels:>3} weighted, " if weighted else ""
    return (f"  {extra}{p.lut_levels:>2} LUT, {p.carry4:>2} CARRY4, {p.muxf} MUXF, "
            f"{p.dsp} DSP: {p.start_module}:{p.start} -> {p.end_module}:{p.end}")


def format_timing(t: Timing) -> list[str]:
    """The timing section of the text report."""
    w = t.lut.worst
    lines = [
        "Timing estimate (logic depth between registers in this netlist; no placement or "
        "routing):",
        f"  worst path: {w.lut_levels} LUT levels, {w.carry4} CARRY4 in series, {w.muxf} "
        f"MUXF7/8, {w.dsp} combinational DSP section(s)",
        f"    from {w.start_module}: {w.start}",
        f"    to   {w.end_module}: {w.end}",
        f"    cells: {w.cells}",
        f"    through: {w.through}",
    ]
    v = t.weighted.worst
    lines += [
        f"  worst weighted path (LUT levels + {DSP_MULT_LEVELS} per combinational DSP "
        f"multiplier, {DSP_ALU_LEVELS} per DSP ALU, {BRAM_OUT_LEVELS} for an unregistered "
        f"BRAM output): {v.levels}",
        f"    {v.lut_levels} LUT levels, {v.carry4} CARRY4, {v.dsp} DSP section(s), from "
        f"{v.start_module}: {v.start}",
        f"    to {v.end_module}: {v.end}",
        f"    cells: {v.cells}",
        f"    through: {v.through}",
        f"  {t.endpoints:,} end points, {t.cells:,} cells analysed.",
        "",
        f"Worst {len(t.lut.paths)} end registers by LUT levels, by module:",
    ]
    by_module: dict[str, list[Path]] = defaultdict(list)
    for p in t.lut.paths:
        by_module[p.end_module].append(p)
    for module, paths in by_module.items():
        lines.append(f"  {module}:")
        lines += [f"  {_path_line(p, False)}" for p in paths]
    lines += ["", "Worst path per module (by end point): LUT levels / weighted levels:"]
    for module, p in t.lut.modules.items():
        wp = t.weighted.modules.get(module)
        lines.append(f"  {module:<16}{p.lut_levels:>3} LUT {p.carry4:>3} CARRY4"
                     f"{wp.levels if wp else 0:>5} weighted  -> {p.end}")
    return lines
