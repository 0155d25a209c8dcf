"""dwsep: an open, Python-first FPGA accelerator for depthwise-separable CNNs.

Subpackages: :mod:`dwsep.hw` (Amaranth generator, config, register map),
:mod:`dwsep.host` (TFLite import, compiler, reference, driver, CLI) and
:mod:`dwsep.sim` (simulation benches and block models).
"""

__version__ = "0.1.0"
