"""Synthesis reports and bitstream builds of the accelerator (``dwsep synth``).

* :mod:`.synth`: Yosys ``synth_xilinx`` resource report against a part (FITS / DOES NOT FIT).
* :mod:`.timing`: logic depth between registers in the Yosys netlist (LUT levels, carry
  chains), the timing estimate without Vivado.
* :mod:`.fmax_ecp5`: place and route on a Lattice ECP5 with nextpnr, an Fmax proxy.
* :mod:`.command`: the ``dwsep synth`` command built from the three.
* :mod:`.build`: ``dwsep build``, the sources and Vivado scripts of a board's overlay.

Imports :mod:`dwsep.hw` (Amaranth), never :mod:`dwsep.host`.
"""
