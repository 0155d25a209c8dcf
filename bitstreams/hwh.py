"""The hardware handoff (``.hwh``) of the block design ``build.tcl`` builds, for simulation.

:func:`block_design_hwh` stands in for the ``dwsep.hwh`` that Vivado writes beside
``dwsep.bit`` (``pynq.Overlay`` reads the ``.hwh`` beside the ``.bit`` it is given), so that
PYNQ can load the overlay on a simulated device without a Vivado run. It is generated from
the facts :mod:`.build` declares once and hands to ``build.tcl`` in ``settings.tcl`` (cell
names, VLNVs, address windows, :data:`~.build.HP_ORDER`) and from the register map
:data:`dwsep.hw.layout.REGISTERS`:

* ``ps7`` (processing_system7): FCLK_CLK0 at the build's clock, divided from the board's IO
  PLL (:func:`fclk_divisors`; Vivado may pick other dividers for the same frequency),
  FCLK1..3 off; M_AXI_GP0 with the accelerator's registers and the interrupt controller;
  one S_AXI_HP port per accelerator manager; IRQ_F2P driven by the interrupt controller;
* ``dwsep`` (the accelerator): its register bus with the register map (ADDRESSBLOCK,
  REGISTERS, FIELDS; a write-1-to-clear register is ``read-write`` to PYNQ), its managers
  with all of DDR, its level-high ``irq``;
* ``axi_intc_0`` (axi_intc): one input ``intr`` from ``dwsep/irq``, output ``irq`` to
  ``ps7/IRQ_F2P``.

Left out, as PYNQ reads none of them: the AXI interconnects, the reset block, the clock and
reset nets, the PS's DDR and MIO settings. The form is the smallest that pynq 4.0.0
(pynqmetadata 0.2.0) was found to accept: an ``EXTERNALPORTS`` element; a ``VLNV`` on every
``MODULE``; the PS7 module matched by ``MODTYPE`` with ``PCW_FPGA_FCLKi_ENABLE``,
``PCW_FCLKi_PERIPHERAL_DIVISOR0/1`` and ``PCW_FCLKi_PERIPHERAL_CLKSRC`` for each FCLK;
``ip_dict`` entries only from the PS's ``MEMRANGE`` elements on M_AXI_GP0, each naming a
subordinate ``BUSINTERFACE`` of its module; interrupt pins only as inputs of an ``axi_intc``
reached from IRQ_F2P, through scalar ``PORT`` elements with ``CONNECTION`` elements.
``PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ`` (the actual clock) is what Vivado writes too; pynq 4.0.0
reads a Zynq UltraScale+ parameter name there instead and needs a patch to use it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from dwsep.hw.config import get_config
from dwsep.hw.layout import REGISTERS, Register

from .build import (
    ACCELERATOR_CELL,
    BLOCK_DESIGN,
    HP_ORDER,
    INTC_BASE,
    INTC_BUS,
    INTC_CELL,
    INTC_RANGE,
    INTC_VLNV,
    PS_CELL,
    PS_VLNV,
    REG_BASE,
    REG_BLOCK,
    REG_BUS,
    REG_RANGE,
    VLNV,
    Board,
)

__all__ = ["FCLK_DIVISOR_MAX", "fclk_divisors", "block_design_hwh"]

#: Each of the two dividers of a PS7 PL clock is 6 bits wide (UG585, FPGA0_CLK_CTRL).
FCLK_DIVISOR_MAX = 63
#: FCLK_CLK0..3
_FCLKS = 4
#: What Vivado writes for an FCLK that is off.
_FCLK_OFF_MHZ = 10.0
#: The end of the HPn_DDR_LOWOCM segment build.tcl assigns each manager: the PYNQ-Z2's
#: 512 MiB of DDR.
_DDR_HIGH = 0x1FFF_FFFF
#: Vivado's name for the axi_intc's register block.
_INTC_BLOCK = "Reg"
_AXIMM = "xilinx.com:interface:aximm:1.0"
#: ``layout.Register.access`` as PYNQ's ``register_map`` knows it (read-only fields cannot
#: be assigned there; write-1-to-clear is plain read-write to it).
_ACCESS = {"rw": "read-write", "ro": "read-only", "rw1c": "read-write"}
#: ``layout.RegisterMap``'s registers are 32-bit words.
_REGISTER_BITS = 32
_PART = re.compile(r"^xc(?P<device>7z\d+)(?P<package>[a-z]+\d+)(?P<speed>-\d+)$")


def fclk_divisors(io_pll_mhz: float, clock_mhz: float) -> tuple[int, int]:
    """The PS7's dividers ``(DIVISOR0, DIVISOR1)`` of a PL clock, each
    1..:data:`FCLK_DIVISOR_MAX`, whose product is closest to ``io_pll_mhz / clock_mhz`` (a
    tie goes to the slower clock); DIVISOR0 is the larger. The clock they give is
    ``io_pll_mhz / (DIVISOR0 * DIVISOR1)``."""
    if not clock_mhz > 0:
        raise ValueError(f"'clock_mhz' must be positive, not {clock_mhz!r}")
    ratio = io_pll_mhz / clock_mhz
    pairs = [(d0, d1) for d0 in range(1, FCLK_DIVISOR_MAX + 1) for d1 in range(1, d0 + 1)]
    return min(pairs, key=lambda d: (abs(d[0] * d[1] - ratio), -d[0] * d[1], -d[0]))


def _hex(value: int) -> str:
    return f"0x{value:08X}"


def _element(parent: ET.Element, tag: str, **attributes: object) -> ET.Element:
    return ET.SubElement(parent, tag, {k: str(v) for k, v in attributes.items()})


def _module(modules: ET.Element, cell: str, vlnv: str, **attributes: object) -> ET.Element:
    return _element(modules, "MODULE", FULLNAME=f"/{cell}", INSTANCE=cell,
                    MODTYPE=vlnv.split(":")[2], VLNV=vlnv, **attributes)


def _parameters(module: ET.Element, values: list[tuple[str, object]]) -> None:
    parameters = _element(module, "PARAMETERS")
    for name, value in values:
        _element(parameters, "PARAMETER", NAME=name, VALUE=value)


def _interrupt(ports: ET.Element, name: str, direction: str, cell: str, pin: str) -> None:
    """A level-high interrupt port ``name`` connected to ``cell/pin``."""
    port = _element(ports, "PORT", DIR=direction, LEFT=0, NAME=name, RIGHT=0,
                    SENSITIVITY="LEVEL_HIGH", SIGIS="INTERRUPT")
    _element(_element(port, "CONNECTIONS"), "CONNECTION", INSTANCE=cell, PORT=pin)


def _buses(module: ET.Element, buses: list[tuple[str, str]]) -> None:
    interfaces = _element(module, "BUSINTERFACES")
    for name, kind in buses:
        _element(interfaces, "BUSINTERFACE", NAME=name, TYPE=kind, VLNV=_AXIMM)


def _memrange(memory_map: ET.Element, manager: str, cell: str, bus: str, block: str,
              base: int, size: int, kind: str) -> None:
    _element(memory_map, "MEMRANGE", ADDRESSBLOCK=block, BASEVALUE=_hex(base),
             HIGHVALUE=_hex(base + size - 1), INSTANCE=cell, MASTERBUSINTERFACE=manager,
             MEMTYPE=kind, SLAVEBUSINTERFACE=bus)


def _fclk_parameters(board: Board, clock_mhz: float) -> list[tuple[str, object]]:
    d0, d1 = fclk_divisors(board.io_pll_mhz, clock_mhz)
    values: list[tuple[str, object]] = [("PCW_FPGA0_PERIPHERAL_FREQMHZ", f"{clock_mhz:g}")]
    for i in range(_FCLKS):
        on = i == 0
        divisors = (d0, d1) if on else (1, 1)
        actual = board.io_pll_mhz / (d0 * d1) if on else _FCLK_OFF_MHZ
        values += [(f"PCW_FPGA_FCLK{i}_ENABLE", int(on)),
                   (f"PCW_FCLK{i}_PERIPHERAL_CLKSRC", "IO PLL"),
                   (f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0", divisors[0]),
                   (f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1", divisors[1]),
                   (f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ", f"{actual:.6f}")]
    return values


def _ps7(modules: ET.Element, board: Board, clock_mhz: float) -> None:
    ps = _module(modules, PS_CELL, PS_VLNV, IS_PL="FALSE")
    _parameters(ps, _fclk_parameters(board, clock_mhz))
    _interrupt(_element(ps, "PORTS"), "IRQ_F2P", "I", INTC_CELL, "irq")
    _buses(ps, [("M_AXI_GP0", "MASTER")]
           + [(f"S_AXI_HP{i}", "SLAVE") for i in range(len(HP_ORDER))])
    memory_map = _element(ps, "MEMORYMAP")
    _memrange(memory_map, "M_AXI_GP0", ACCELERATOR_CELL, REG_BUS, REG_BLOCK, REG_BASE,
              REG_RANGE, "REGISTER")
    _memrange(memory_map, "M_AXI_GP0", INTC_CELL, INTC_BUS, _INTC_BLOCK, INTC_BASE,
              INTC_RANGE, "REGISTER")


def _register(registers: ET.Element, register: Register) -> None:
    access = _ACCESS[register.access]
    element = _element(registers, "REGISTER", NAME=register.name)
    for name, value in [("DESCRIPTION", register.doc), ("ADDRESS_OFFSET", hex(register.offset)),
                        ("SIZE", _REGISTER_BITS), ("ACCESS", access), ("IS_ENABLED", "true")]:
        _element(element, "PROPERTY", NAME=name, VALUE=value)
    fields = _element(element, "FIELDS")
    for field in register.fields:
        f = _element(fields, "FIELD", NAME=field.name)
        for name, value in [("DESCRIPTION", field.doc), ("ACCESS", access),
                            ("BIT_OFFSET", field.lsb), ("BIT_WIDTH", field.width)]:
            _element(f, "PROPERTY", NAME=name, VALUE=value)


def _accelerator(modules: ET.Element) -> None:
    accelerator = _module(modules, ACCELERATOR_CELL, VLNV)
    block = _element(_element(accelerator, "ADDRESSBLOCKS"), "ADDRESSBLOCK",
                     ACCESS="read-write", INTERFACE=REG_BUS, NAME=REG_BLOCK, RANGE=REG_RANGE,
                     USAGE="register")
    registers = _element(block, "REGISTERS")
    for register in REGISTERS:
        _register(registers, register)
    _interrupt(_element(accelerator, "PORTS"), "irq", "O", INTC_CELL, "intr")
    _buses(accelerator, [(REG_BUS, "SLAVE")] + [(bus, "MASTER") for bus in HP_ORDER])
    memory_map = _element(accelerator, "MEMORYMAP")
    for i, bus in enumerate(HP_ORDER):
        _memrange(memory_map, bus, PS_CELL, f"S_AXI_HP{i}", f"HP{i}_DDR_LOWOCM", 0,
                  _DDR_HIGH + 1, "MEMORY")


def _intc(modules: ET.Element) -> None:
    intc = _module(modules, INTC_CELL, INTC_VLNV)
    _parameters(intc, [("C_NUM_INTR_INPUTS", 1), ("C_IRQ_CONNECTION", 1),
                       ("C_IRQ_IS_LEVEL", 1)])
    ports = _element(intc, "PORTS")
    _interrupt(ports, "intr", "I", ACCELERATOR_CELL, "irq")
    _interrupt(ports, "irq", "O", PS_CELL, "IRQ_F2P")
    _buses(intc, [(INTC_BUS, "SLAVE")])


def block_design_hwh(board: Board, config_name: str, clock_mhz: float) -> str:
    """The ``.hwh`` XML of the block design ``build.tcl`` builds for ``board`` with the
    accelerator of config ``config_name`` and the fabric clock ``clock_mhz`` (what
    ``dwsep build --clock-mhz`` takes): a stand-in for Vivado's ``dwsep.hwh`` in
    simulation (see the module's docstring for what it holds)."""
    config = get_config(config_name)
    board.check_clock(clock_mhz)
    part = _PART.match(board.part)
    if part is None:
        raise ValueError(f"part {board.part!r} of board {board.name} is not a Zynq-7000 "
                         "part (xc7z<n><package>-<speed>)")
    root = ET.Element("EDKSYSTEM", EDWVERSION="1.2", TIMESTAMP="simulated")
    _element(root, "SYSTEMINFO", ARCH="zynq", DEVICE=part["device"], NAME=BLOCK_DESIGN,
             PACKAGE=part["package"], SPEEDGRADE=part["speed"])
    _element(root, "EXTERNALPORTS")
    modules = _element(root, "MODULES")
    _ps7(modules, board, clock_mhz)
    _accelerator(modules)
    _intc(modules)
    ET.indent(root)
    return ('<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n'
            f"<!-- Not written by Vivado: dwsep.bitstreams.hwh's stand-in for {BLOCK_DESIGN}.hwh"
            f" (board {board.name}, config '{config.name}', fabric clock {clock_mhz:g} MHz)"
            " -->\n" + ET.tostring(root, encoding="unicode") + "\n")
