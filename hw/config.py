"""The one object that sizes the accelerator: :class:`AcceleratorConfig`.

Hardware generator, compiler, NumPy models and driver all take the same config, passed
explicitly. This module imports nothing from Amaranth so the host can use it on a PYNQ image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

__all__ = ["AcceleratorConfig", "CONFIGS", "get_config", "override", "ConfigError",
           "BEAT_BYTES", "REQUANT_INPUT_BITS"]

BEAT_BYTES = 8  # one AXI beat of the 64-bit data bus

#: Width of a requantizer's input ``(acc + bias) << max(shift, 0)``: a signed value of this
#: many bits times the 31-bit multiplier is two DSP48E1 products (25 x 18 each). The compiler
#: proves, per output channel, that no int8 input can take the value past it.
REQUANT_INPUT_BITS = 25


class ConfigError(ValueError):
    """An :class:`AcceleratorConfig` field has a value the generator cannot build."""


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _bits(n: int) -> int:
    """Bits of an unsigned counter that holds values ``0..n`` inclusive."""
    return max(1, n.bit_length())


@dataclass(frozen=True)
class AcceleratorConfig:
    """Every size of one accelerator instance.

    Parameters
    ----------
    name:
        Short name, used for build directories and error messages.
    dw_lanes:
        ``P_dw``: channels the depthwise array computes per cycle (one tap each). Also the
        channel granularity of activations in DDR: tensors are stored NHWC with the channel
        count padded up to a multiple of ``dw_lanes``. Multiple of 8 (one AXI beat).
    pw_rows:
        ``P_in``: input channels the pointwise array reduces per cycle. Must equal
        ``dw_lanes`` (the DW output word is the PW input word).
    pw_cols:
        ``P_out``: output channels the pointwise array produces per cycle; ``pw_rows *
        pw_cols`` MAC units. Multiple of 8.
    k_max:
        Largest depthwise kernel side (odd or even, 1..k_max at run time).
    lb_window:
        Input rows one output row's window may span: a ``k x k`` kernel at dilation ``d``
        spans ``(k - 1) * d + 1`` rows, any ``k <= k_max`` and ``d`` within this, chosen per
        layer (the line buffer trades kernel size for dilation at run time; 7: 3x3 at
        dilation up to 3, 5x5 and 7x7 at dilation 1). At least ``k_max``, at most 15.
    max_dim:
        Largest input or output height/width (sizes the counters).
    lb_width, lb_channels:
        The line buffer holds rows of up to ``lb_width * lb_channels`` bytes: any input with
        ``W * C_pad <= lb_width * lb_channels`` fits.
    mid_channels_max:
        Largest depthwise output channel count ``C * depth_multiplier`` (padded per
        input-channel group, see docs/ARCHITECTURE.md); sizes DW weight/table memories and
        the on-chip pixel buffer between DW and PW.
    out_channels_max:
        Largest pointwise output channel count; sizes PW weight/table memories.
    expand_channels_max:
        Largest input channel count of a fused 1x1 expand stage (its outputs are bounded by
        ``mid_channels_max``); sizes the expand weight memory.
    add_lanes:
        Values the residual ADD computes per cycle (by table: no DSP48; two 256 x 60-bit
        distributed-RAM tables each); divides ``pw_cols``.
    dw_taps:
        ``T``: kernel rows the depthwise array computes per cycle for each lane (a column of
        ``T`` taps, one from each of ``T`` line-buffer rows); a ``k x k`` kernel takes
        ``dw_passes(k) * k`` cycles per pixel-group. At most ``k_max``.
    requant_lanes:
        Values each requantizer (the engine's, for its expand and project words, and the
        DW one) computes per cycle (2 DSP48 each); divides ``dw_lanes`` and ``pw_cols``. A
        word of ``L`` values takes ``L / requant_lanes`` cycles.
    dw_requant_dsps:
        DSP48E1 per compute lane of the DW requantizer: 2 (default), or 1 with its high
        partial product (25 x 14 bits) in LUTs, about 400 LUTs a lane, the same results
        and latency.
    engine_requant_lanes:
        Compute lanes of the engine's requantizer (its expand and project words share it):
        ``None`` (the default) is ``requant_lanes``. Divides ``pw_cols``; a word takes
        ``pw_cols / engine_requant_lanes`` cycles (:attr:`erq_lanes`). Its table records
        (``exp_table``, ``pw_table``) hold this many channels.
    engine_requant_lut_lanes:
        Of the engine requantizer's compute lanes, how many form their high partial product
        in LUTs (one DSP48E1 instead of two, as ``dw_requant_dsps=1``): 0 (the default) to
        :attr:`erq_lanes`.
    axi_data_width:
        AXI4 master data width in bits. Only 64 is supported (PYNQ HP ports).
    axi_addr_width:
        AXI4 master address width in bits.
    dw_weight_words:
        Words (``dw_taps x dw_lanes`` bytes) of the DW weight memory, one per (mid group,
        pass, kernel column) of a layer. ``None``: room for ``mid_channels_max`` channels at
        ``k_max`` (:attr:`dw_weight_depth`). Smaller bounds a DW stage's channels by its
        kernel (``dw_passes(k) * k`` words a group): the compiler refuses wider ones and
        cuts wider pools into channel slices. At least room for a 3x3 depthwise stage of
        ``mid_channels_max`` channels.
    engine_weight_words:
        Words (``dw_lanes x pw_cols`` bytes) of the 1x1 engine's weight memory. ``None``:
        room for the largest expand and PW weight tables together (``expand_weight_depth +
        pw_weight_depth``). Smaller sizes the memory apart from ``out_channels_max``: the
        compiler then cuts a layer's output tiles so that its tables fit. At least
        ``expand_weight_depth + mid_groups_max`` (any fused block, one PW group a tile).
    """

    name: str
    dw_lanes: int
    pw_rows: int
    pw_cols: int
    k_max: int
    lb_window: int
    max_dim: int
    lb_width: int
    lb_channels: int
    mid_channels_max: int
    out_channels_max: int
    expand_channels_max: int
    add_lanes: int = 4
    dw_taps: int = 3
    requant_lanes: int = 8
    dw_requant_dsps: int = 2
    axi_data_width: int = 64
    axi_addr_width: int = 32
    dw_weight_words: int | None = None
    engine_weight_words: int | None = None
    engine_requant_lanes: int | None = None
    engine_requant_lut_lanes: int = 0

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"config {self.name!r}: {msg}")

        # None: derived
        optional = {"dw_weight_words", "engine_weight_words", "engine_requant_lanes"}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "name" or (f.name in optional and v is None):
                continue
            least = 0 if f.name == "engine_requant_lut_lanes" else 1
            need(isinstance(v, int) and not isinstance(v, bool) and v >= least,
                 f"{f.name} must be {'a non-negative' if least == 0 else 'a positive'} int, "
                 f"not {v!r}")
        need(self.dw_requant_dsps in (1, 2),
             f"dw_requant_dsps must be 1 or 2, not {self.dw_requant_dsps}")
        need(self.axi_data_width == 64,
             f"axi_data_width must be 64 (PYNQ HP ports), not {self.axi_data_width}")
        need(self.dw_lanes % BEAT_BYTES == 0,
             f"dw_lanes must be a multiple of {BEAT_BYTES}, not {self.dw_lanes}")
        need(self.pw_cols % BEAT_BYTES == 0,
             f"pw_cols must be a multiple of {BEAT_BYTES}, not {self.pw_cols}")
        need(self.pw_rows == self.dw_lanes,
             f"pw_rows ({self.pw_rows}) must equal dw_lanes ({self.dw_lanes})")
        for name in ("dw_lanes", "pw_rows", "pw_cols"):
            need(getattr(self, name) <= 255, f"{name} must be <= 255, not {getattr(self, name)}")
        for name in ("max_dim", "lb_width", "lb_channels", "mid_channels_max",
                     "out_channels_max", "expand_channels_max"):
            need(getattr(self, name) <= 65535,
                 f"{name} must be <= 65535, not {getattr(self, name)}")
        need(self.k_max <= 15, f"k_max must be <= 15, not {self.k_max}")
        need(self.k_max <= self.lb_window <= 15,
             f"lb_window must be in k_max..15 ({self.k_max}..15), not {self.lb_window}")
        need(self.lb_channels % self.dw_lanes == 0,
             f"lb_channels ({self.lb_channels}) must be a multiple of dw_lanes "
             f"({self.dw_lanes})")
        need(self.mid_channels_max % self.dw_lanes == 0,
             f"mid_channels_max ({self.mid_channels_max}) must be a multiple of dw_lanes "
             f"({self.dw_lanes})")
        need(self.out_channels_max % self.pw_cols == 0,
             f"out_channels_max ({self.out_channels_max}) must be a multiple of pw_cols "
             f"({self.pw_cols})")
        need(self.expand_channels_max % self.dw_lanes == 0,
             f"expand_channels_max ({self.expand_channels_max}) must be a multiple of "
             f"dw_lanes ({self.dw_lanes})")
        need(self.pw_cols % self.add_lanes == 0,
             f"add_lanes ({self.add_lanes}) must divide pw_cols ({self.pw_cols})")
        need(self.dw_taps <= self.k_max,
             f"dw_taps ({self.dw_taps}) must not exceed k_max ({self.k_max})")
        for name in ("dw_lanes", "pw_cols"):
            need(getattr(self, name) % self.requant_lanes == 0,
                 f"requant_lanes ({self.requant_lanes}) must divide {name} "
                 f"({getattr(self, name)})")
        need(self.pw_cols % self.erq_lanes == 0,
             f"engine_requant_lanes ({self.erq_lanes}) must divide pw_cols ({self.pw_cols})")
        need(self.engine_requant_lut_lanes <= self.erq_lanes,
             f"engine_requant_lut_lanes ({self.engine_requant_lut_lanes}) must not exceed "
             f"the engine requantizer's lanes ({self.erq_lanes})")
        need(self.lb_width <= self.max_dim,
             f"lb_width ({self.lb_width}) must not exceed max_dim ({self.max_dim})")
        need(16 <= self.axi_addr_width <= 64,
             f"axi_addr_width must be in 16..64, not {self.axi_addr_width}")
        least = self.dw_words(self.mid_groups_max, min(3, self.k_max))
        need(self.dw_weight_depth >= least,
             f"dw_weight_words ({self.dw_weight_words}) must be at least {least}: a "
             f"{min(3, self.k_max)}x{min(3, self.k_max)} depthwise stage of mid_channels_max "
             "channels")
        least = self.expand_weight_depth + self.mid_groups_max
        need(self.engine_weight_depth >= least,
             f"engine_weight_words ({self.engine_weight_words}) must be at least "
             f"expand_weight_depth + mid_groups_max ({least}): a fused block's expand "
             "weights and one PW output group's")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def beat_bytes(self) -> int:
        return self.axi_data_width // 8

    @property
    def erq_lanes(self) -> int:
        """Compute lanes of the engine's requantizer: ``engine_requant_lanes``, or
        ``requant_lanes`` when that is ``None``."""
        return self.requant_lanes if self.engine_requant_lanes is None \
            else self.engine_requant_lanes

    def window_rows(self, kernel: int, dilation: int) -> int:
        """Input rows a ``kernel x kernel`` window at ``dilation`` spans: ``(kernel - 1) *
        dilation + 1``."""
        return (kernel - 1) * dilation + 1

    def dilation_limit(self, kernel: int) -> int:
        """Largest dilation of a ``kernel x kernel`` window within :attr:`lb_window` rows
        (a 1x1 kernel spans one row at any dilation: :attr:`dilation_max`)."""
        if kernel <= 1:
            return self.dilation_max
        return (self.lb_window - 1) // (kernel - 1)

    @property
    def dilation_max(self) -> int:
        """Largest dilation of any kernel: a 2x2 one's, ``lb_window - 1`` (at least 1)."""
        return max(1, self.lb_window - 1)

    @property
    def lb_rows(self) -> int:
        """Row slots in the line buffer: the window rounded up to a power of two, so the slot
        of input row ``y`` is ``y mod lb_rows`` (its low bits)."""
        return _pow2_ceil(self.lb_window)

    @property
    def lb_row_words(self) -> int:
        """Words (``dw_lanes`` bytes each) per line-buffer row slot, a power of two."""
        return _pow2_ceil(self.lb_width * self.lb_channels // self.dw_lanes)

    @property
    def lb_depth(self) -> int:
        return self.lb_rows * self.lb_row_words

    @property
    def in_groups_max(self) -> int:
        return self.lb_channels // self.dw_lanes

    @property
    def mid_groups_max(self) -> int:
        return self.mid_channels_max // self.dw_lanes

    @property
    def out_groups_max(self) -> int:
        return self.out_channels_max // self.pw_cols

    def dw_passes(self, kernel: int) -> int:
        """Passes of ``dw_taps`` kernel rows that cover a ``kernel``-row window."""
        return -(-kernel // self.dw_taps)

    def dw_words(self, groups: int, kernel: int) -> int:
        """DW weight words of ``groups`` mid groups at a ``kernel x kernel`` window: one per
        (group, pass, kernel column)."""
        return groups * self.dw_passes(kernel) * kernel

    @property
    def dw_weight_depth(self) -> int:
        """Words (``dw_taps * dw_lanes`` bytes) of the DW weight memory:
        ``dw_weight_words``, by default :meth:`dw_words` of ``mid_groups_max`` at
        ``k_max``."""
        if self.dw_weight_words is not None:
            return self.dw_weight_words
        return self.dw_words(self.mid_groups_max, self.k_max)

    def dw_channels_max(self, kernel: int) -> int:
        """The most DW output channels a ``kernel x kernel`` stage has: ``mid_channels_max``,
        or fewer where their weights would not fit ``dw_weight_words``."""
        groups = self.dw_weight_depth // self.dw_words(1, kernel)
        return min(self.mid_groups_max, groups) * self.dw_lanes

    @property
    def pw_weight_depth(self) -> int:
        """Words of the PW weight memory: one per (out group, mid group)."""
        return self.out_groups_max * self.mid_groups_max

    @property
    def expand_in_groups_max(self) -> int:
        return self.expand_channels_max // self.dw_lanes

    @property
    def expand_weight_depth(self) -> int:
        """Words of the expand weight memory (``P x P`` bytes each): one per (expanded
        group, input group)."""
        return self.mid_groups_max * self.expand_in_groups_max

    @property
    def engine_weight_depth(self) -> int:
        """Words (``dw_lanes x pw_cols`` bytes) of the 1x1 engine's weight memory:
        ``engine_weight_words``, by default room for the largest expand and PW weight tables
        together. Each descriptor places its tables (``exp_wbase``, ``pw_wbase``); the rest
        of the memory takes the next descriptor's weights while it runs (the prefetch
        segments)."""
        if self.engine_weight_words is not None:
            return self.engine_weight_words
        return self.expand_weight_depth + self.pw_weight_depth

    @property
    def lb_row_capacity_words(self) -> int:
        """Words (``dw_lanes`` bytes) of one line-buffer row: ``W * groups`` may not exceed
        it."""
        return self.lb_width * self.lb_channels // self.dw_lanes

    @property
    def macs(self) -> int:
        """MAC units: DW lanes x taps and the 1x1 engine (``pw_rows x pw_cols``, shared by
        the expand and the project stage)."""
        return self.dw_lanes * self.dw_taps + self.pw_rows * self.pw_cols

    @property
    def dim_bits(self) -> int:
        return _bits(self.max_dim)

    def to_dict(self) -> dict:
        return asdict(self)


def _named(*configs: AcceleratorConfig) -> dict[str, AcceleratorConfig]:
    return {c.name: c for c in configs}


CONFIGS: dict[str, AcceleratorConfig] = _named(
    # Small arrays, full-size windows: fast Verilator builds, covers every layer parameter
    # the tests draw (k <= 7, windows of 13 rows: 7x7 at dilation 2, 3x3 at 6, H, W <= 32,
    # C, C_out <= 64).
    AcceleratorConfig(
        name="tiny", dw_lanes=8, pw_rows=8, pw_cols=8, k_max=7, lb_window=13,
        max_dim=64, lb_width=64, lb_channels=64, mid_channels_max=256, out_channels_max=64,
        expand_channels_max=64, requant_lanes=4,
    ),
    # Aimed at xc7z020 (PYNQ-Z2: 140 BRAM36, 220 DSP48E1), sized for MobileNet V1/V2-224:
    # 960-channel depthwise layers, residual blocks up to 160 channels. Line buffer 8 rows x
    # 16 KiB, windows of 7 rows (7x7 and 5x5 at dilation 1, 3x3 at up to 3: atrous
    # backbones), PW output tiles up to 264 channels (11 engine
    # words: a 512-channel layer in two tiles), expand inputs up to 96. BRAM36: the engine's
    # one weight memory of 1,024 words (384 bytes each: 86 BRAM36; 768 words take as many,
    # 512 take 43) holds a descriptor's expand and PW weights and the next one's (the
    # compiler cuts output tiles to fit it); the DW weight memory of 512 words (48 bytes
    # each: 5.5 BRAM36 instead of 16.5 for 1,344) holds a 3x3 stage of 1,024 channels or a
    # 7x7 pool of 384 (the compiler slices wider pools). DSP48E1: the 16x24 engine at two
    # MACs each (192), the engine's requantizer of 12 lanes (two cycles a 24-channel word)
    # 2 per lane but 1 for 4 of them (20: their high product in LUTs), the DW one of 8
    # lanes 1 per lane (8); the ADD uses none (by table): 220 in all, see
    # bitstreams/README.md and docs/PLAN-pynq-z2.md.
    AcceleratorConfig(
        name="pynq-z2", dw_lanes=16, pw_rows=16, pw_cols=24, k_max=7, lb_window=7,
        max_dim=256, lb_width=128, lb_channels=128, mid_channels_max=1024,
        out_channels_max=264, expand_channels_max=96, add_lanes=2, dw_requant_dsps=1,
        dw_weight_words=512, engine_weight_words=1024, engine_requant_lanes=12,
        engine_requant_lut_lanes=4,
    ),
    # ZCU104-class (xczu7ev): wider arrays.
    AcceleratorConfig(
        name="zcu104", dw_lanes=32, pw_rows=32, pw_cols=32, k_max=7, lb_window=13,
        max_dim=512, lb_width=128, lb_channels=256, mid_channels_max=2048,
        out_channels_max=2048, expand_channels_max=320,
    ),
)


def get_config(config: str | AcceleratorConfig) -> AcceleratorConfig:
    """Return a named config (or pass a config object through)."""
    if isinstance(config, AcceleratorConfig):
        return config
    try:
        return CONFIGS[config]
    except KeyError:
        raise ConfigError(
            f"unknown accelerator config {config!r}; known configs: {', '.join(CONFIGS)}"
        ) from None


def override(cfg: AcceleratorConfig, assignments: list[str]) -> AcceleratorConfig:
    """``cfg`` with ``FIELD=N`` assignments applied (validated by the config itself), named
    ``<name>-custom`` when there are any."""
    if not assignments:
        return cfg
    names = [f for f in cfg.to_dict() if f != "name"]
    changes = {}
    for item in assignments:
        field, sep, value = item.partition("=")
        if not sep or not field or not value.isdigit():
            raise ValueError(f"--set takes FIELD=N with N a non-negative integer, "
                             f"not {item!r}")
        if field not in names:
            raise ValueError(f"--set {item}: no config field {field!r}; fields: "
                             f"{', '.join(names)}")
        changes[field] = int(value)
    return replace(cfg, name=f"{cfg.name}-custom", **changes)
