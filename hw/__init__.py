"""Hardware generator (Amaranth 0.5) and the declarations shared with the host.

``config`` and ``layout`` import no Amaranth (the host uses them on a PYNQ image); every other
module here is one :class:`amaranth.lib.wiring.Component`.
"""

from .config import CONFIGS, AcceleratorConfig, ConfigError, get_config

__all__ = ["AcceleratorConfig", "CONFIGS", "ConfigError", "get_config"]
