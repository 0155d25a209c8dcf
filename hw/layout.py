"""Register map, layer-descriptor layout and shared enums: declared once, here.

Gateware, host driver, compiler and tests all read offsets and bit positions from these
declarations (or their JSON export); nothing else spells a register offset or a descriptor
bit position. Plain Python (no Amaranth) so that the host runs on a PYNQ image.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from .config import BEAT_BYTES, AcceleratorConfig

__all__ = [
    "Opcode", "DescFlag", "ErrorCode", "Field", "Register", "RegisterMap", "DescriptorLayout",
    "REGISTERS", "DESCRIPTOR", "ADDRESS_FIELDS", "ADDRESS_ALIGN", "PREFETCH_SEGMENTS",
    "ADD_TABLE_ENTRIES", "Table", "REQUANT_RECORD_FIELDS", "TABLE_RECORD_BYTES_PER_LANE",
    "table_record_bytes", "table_loads",
    "ID_MAGIC", "HW_VERSION",
    "export", "export_json", "markdown",
    "capability_values", "descriptor_param_checks", "descriptor_product_checks",
    "descriptor_extents", "window_checks",
    "DESCRIPTOR_PRODUCTS", "descriptor_products", "product_operands", "product_operand_bits",
    "scale", "expand_words", "out_last_beats_max",
]

ID_MAGIC = 0x44575350  # "DWSP"
HW_VERSION = 8


class Opcode(enum.IntEnum):
    """Layer operation of a descriptor."""
    INVALID = 0
    #: [expand 1x1] -> line buffer -> DW (or conv taps) -> PW -> [residual ADD]; which
    #: optional stages run is set by :class:`DescFlag`. See docs/ARCHITECTURE.md.
    LAYER = 1


class DescFlag(enum.IntFlag):
    LAST = 1       #: this descriptor ends the program
    EXPAND = 2     #: a 1x1 expand PW stage between the input and the line buffer
    CONV = 4       #: the line-buffer taps feed the PW array directly (k x k convolution)
    RESIDUAL = 8   #: ADD a second input (res_addr) to the PW stage's int8 output
    RAW_OUT = 16   #: write the PW stage's int32 accumulators (no requant; host step)
    #: the expand weights are in the engine's weight memory at ``exp_wbase`` already (loaded
    #: for an earlier descriptor, or prefetched while the previous one ran): not read again
    EXP_LOADED = 32
    #: the PW weights are in the engine's weight memory at ``pw_wbase`` already
    PW_LOADED = 64
    #: global pool: the line buffer streams every input pixel (kernel 1, stride 1) and the DW
    #: requantizer sums the DW outputs of all ``in_h * in_w`` pixels per channel before it
    #: requantizes them: one output pixel
    POOL = 128


class ErrorCode(enum.IntEnum):
    """Value of ``ERROR.code`` when ``STATUS.error`` is set."""
    NONE = 0
    BAD_OPCODE = 1      #: descriptor opcode is not one this hardware runs
    BAD_PARAMS = 2      #: descriptor field outside the limits the hardware was built with
    AXI_READ = 3        #: SLVERR/DECERR on a read (descriptor, weights, activations)
    AXI_WRITE = 4       #: SLVERR/DECERR on a write response
    MISALIGNED = 5      #: a descriptor address is not ADDRESS_ALIGN-byte aligned
    ABORTED = 6         #: ``CTRL.abort`` stopped the run (its bursts drained, stages reset)
    #: a DDR region the descriptor reads or writes (or the descriptor itself) is not inside
    #: the window ``WINDOW_LO``..``WINDOW_HI`` the host programmed
    OUT_OF_WINDOW = 7


@dataclass(frozen=True)
class Field:
    """A bit field: ``width`` bits at ``lsb`` of a word (register or descriptor)."""
    name: str
    lsb: int
    width: int
    signed: bool = False
    doc: str = ""
    reset: int = 0  #: value after reset (registers)

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    def encode(self, value: int) -> int:
        lo, hi = ((-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1) if self.signed
                  else (0, (1 << self.width) - 1))
        if not lo <= value <= hi:
            raise ValueError(f"field {self.name!r} takes {lo}..{hi}, not {value}")
        return (value & ((1 << self.width) - 1)) << self.lsb

    def decode(self, word: int) -> int:
        v = (word >> self.lsb) & ((1 << self.width) - 1)
        if self.signed and v >> (self.width - 1):
            v -= 1 << self.width
        return v


def _place(spec: list[tuple], word_bits: int) -> tuple[Field, ...]:
    """Place fields in order, none crossing a ``word_bits`` boundary. ``spec`` items are
    ``(name, width)``, ``(name, width, signed)``, ``(name, width, signed, doc)`` or
    ``(name, width, signed, doc, reset)``; a name of ``None`` is reserved padding."""
    out, pos = [], 0
    for item in spec:
        name, width, signed, doc, reset = (*item, False, "", 0)[:5] if len(item) == 2 \
            else (*item, "", 0)[:5] if len(item) == 3 else (*item, 0)[:5]
        if pos // word_bits != (pos + width - 1) // word_bits:
            pos = (pos // word_bits + 1) * word_bits
        if name is not None:
            out.append(Field(name, pos, width, signed, doc, reset))
        pos += width
    return tuple(out)


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str  #: "rw", "ro" or "rw1c" (fields marked w1c in the doc clear on writing 1)
    fields: tuple[Field, ...]
    doc: str

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")


class RegisterMap:
    """AXI4-Lite register bank: 32-bit registers at consecutive word offsets."""

    def __init__(self, regs: list[tuple[str, str, list[tuple], str]]):
        self.registers = tuple(
            Register(name, 4 * i, access, _place(fields, 32), doc)
            for i, (name, access, fields, doc) in enumerate(regs))
        self._by_name = {r.name: r for r in self.registers}

    def __getitem__(self, name: str) -> Register:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.registers)

    @property
    def addr_width(self) -> int:
        """AXI4-Lite address bits needed to reach every register."""
        return max(2, (4 * len(self.registers) - 1).bit_length())


REGISTERS = RegisterMap([
    ("CTRL", "rw", [("start", 1, False, "write 1: start the program at PROGRAM (reads 0)"),
                    ("irq_enable", 1, False, "drive irq while STATUS.done or .error is set"),
                    ("abort", 1, False, "write 1 while busy: stop the run, drain its AXI "
                     "bursts, reset every stage; it ends with ErrorCode.ABORTED (reads 0)")],
     "Control"),
    ("STATUS", "rw1c", [("busy", 1, False, "a program is running"),
                        ("done", 1, False, "program finished (w1c; also cleared by start)"),
                        ("error", 1, False, "program stopped on an error, see ERROR (w1c)")],
     "Status"),
    ("ERROR", "ro", [("code", 8, False, "ErrorCode of the last error"),
                     (None, 8),
                     ("layer", 16, False, "descriptor index where it happened")],
     "Error code"),
    ("ERROR_ADDR", "ro", [("addr", 32, False, "AXI_READ/AXI_WRITE: first address of the "
                           "burst answered with SLVERR or DECERR; other errors: the address "
                           "of the descriptor")], "Error address"),
    ("PROGRAM", "rw", [("addr", 32, False, "DDR address of the first descriptor (8-aligned)")],
     "Program address"),
    ("WINDOW_LO", "rw", [("addr", 32, False, "first DDR byte a program may reach")],
     "DDR window"),
    ("WINDOW_HI", "rw", [("addr", 32, False, "last DDR byte a program may reach (reset: "
                          "the whole address space)", 0xFFFF_FFFF)], "DDR window"),
    ("LAYER", "ro", [("index", 16, False, "descriptor being executed (progress)")],
     "Progress"),
    ("CYCLES_LO", "ro", [("value", 32, False, "cycles from start to done, low word; reading"
                          " it latches the high word into CYCLES_HI")], "Cycle counter"),
    ("CYCLES_HI", "ro", [("value", 32, False, "high word latched by the last CYCLES_LO read")],
     "Cycle counter"),
    ("ID", "ro", [("magic", 32, False, "identifies a dwsep accelerator")], "Identification"),
    ("VERSION", "ro", [("hw", 16, False, "register/descriptor layout version")], "Version"),
    ("CAP_ARRAY", "ro", [("dw_lanes", 8), ("pw_rows", 8), ("pw_cols", 8), ("k_max", 4),
                         ("lb_window", 4)], "Capabilities: arrays"),
    ("CAP_LB", "ro", [("lb_width", 16), ("lb_channels", 16)], "Capabilities: line buffer"),
    ("CAP_CHANNELS", "ro", [("mid_channels_max", 16), ("out_channels_max", 16)],
     "Capabilities: channel limits"),
    ("CAP_DIM", "ro", [("max_dim", 16)], "Capabilities: largest H/W"),
    ("CAP_EXPAND", "ro", [("expand_channels_max", 16)], "Capabilities: expand stage"),
])


def capability_values(config: AcceleratorConfig) -> dict[str, dict[str, int]]:
    """Values of the read-only capability registers for ``config``."""
    return {
        "ID": {"magic": ID_MAGIC},
        "VERSION": {"hw": HW_VERSION},
        "CAP_ARRAY": {"dw_lanes": config.dw_lanes, "pw_rows": config.pw_rows,
                      "pw_cols": config.pw_cols, "k_max": config.k_max,
                      "lb_window": config.lb_window},
        "CAP_LB": {"lb_width": config.lb_width, "lb_channels": config.lb_channels},
        "CAP_CHANNELS": {"mid_channels_max": config.mid_channels_max,
                         "out_channels_max": config.out_channels_max},
        "CAP_DIM": {"max_dim": config.max_dim},
        "CAP_EXPAND": {"expand_channels_max": config.expand_channels_max},
    }


class DescriptorLayout:
    """A layer descriptor: ``size`` bytes in DDR, little-endian, fields at bit offsets."""

    size = 128  #: bytes, 16 AXI beats

    def __init__(self, spec: list[tuple]):
        self.fields = _place(spec, 32)
        self._by_name = {f.name: f for f in self.fields}
        end = max(f.lsb + f.width for f in self.fields)
        assert end <= 8 * self.size, end

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.fields)

    def pack(self, **values: int) -> bytes:
        """Encode one descriptor; every field must be given."""
        missing = set(self._by_name) - set(values)
        extra = set(values) - set(self._by_name)
        if missing or extra:
            raise ValueError(f"descriptor fields missing {sorted(missing)}, "
                             f"unknown {sorted(extra)}")
        word = 0
        for name, value in values.items():
            word |= self._by_name[name].encode(int(value))
        return word.to_bytes(self.size, "little")

    def value(self, bits, name: str):
        """Field ``name`` of the descriptor ``bits`` (an Amaranth value of ``8 * size``
        bits), signed where the field is: the gateware's reading of :meth:`pack`."""
        f = self._by_name[name]
        value = bits[f.lsb:f.lsb + f.width]
        return value.as_signed() if f.signed else value

    def unpack(self, raw: bytes) -> dict[str, int]:
        if len(raw) != self.size:
            raise ValueError(f"a descriptor is {self.size} bytes, not {len(raw)}")
        word = int.from_bytes(raw, "little")
        return {f.name: f.decode(word) for f in self.fields}


DESCRIPTOR = DescriptorLayout([
    ("opcode", 8, False, "Opcode"),
    ("flags", 8, False, "DescFlag"),
    ("kernel", 4, False, "line-buffer kernel side k (1..k_max)"),
    ("stride", 4, False, "stride (1 or 2)"),
    ("dilation", 4, False, "dilation d: the window's (k-1)*d+1 rows within lb_window"),
    ("depth_mult", 8, False, "depthwise channel multiplier m (>= 1; 1 with CONV)"),
    ("pad_top", 8, False, "rows of zero-point padding above the input"),
    ("pad_left", 8, False, "columns of zero-point padding left of the input"),
    ("in_h", 16), ("in_w", 16),
    ("in_groups", 16, False, "input channels / dw_lanes (padded), as stored in DDR"),
    ("exp_groups", 16, False, "line-buffer channel groups: expand output, else in_groups"),
    ("exp_words", 16, False, "EXPAND: engine output words (pw_cols channels) per pixel, "
                             "ceil(exp_groups*dw_lanes/pw_cols); else exp_groups"),
    ("mid_groups", 16, False, "PW input words per pixel: exp_groups*m, or k*k*exp_groups"),
    ("out_groups", 16, False, "engine words per output pixel: the tile's channels / "
                              "pw_cols (padded)"),
    ("out_beats", 16, False, "beats stored per output pixel: its channels padded to "
                             "dw_lanes (the last engine word's others are dropped, or zero "
                             "filler beats follow it); RAW_OUT: out_groups*pw_cols/2"),
    ("out_h", 16), ("out_w", 16),
    ("out_pitch", 16, False, "beats from one output pixel to the next in DDR"),
    ("lb_zp", 8, True, "line-buffer input zero point: value of padded taps"),
    ("exp_zp", 8, True), ("exp_min", 8, True), ("exp_max", 8, True),
    ("dw_zp", 8, True), ("dw_min", 8, True), ("dw_max", 8, True),
    ("pw_zp", 8, True), ("pw_min", 8, True), ("pw_max", 8, True),
    ("add_zp", 8, True, "ADD: output zero point"),
    ("add_min", 8, True), ("add_max", 8, True),
    ("add_out_shift", 8, True, "ADD: output shift (TFLite's, -31..0); the rest is add_table"),
    ("in_addr", 32, False, "input activations (NHWC, channels padded)"),
    ("out_addr", 32, False, "output activations (NHWC, pixel pitch out_pitch beats)"),
    ("res_addr", 32, False, "RESIDUAL: the second ADD input, laid out as the output"),
    ("exp_weights", 32, False, "EXPAND: weight words (dw_lanes x pw_cols)"),
    ("exp_table", 32, False, "EXPAND: requant table"),
    ("dw_weights", 32, False, "DW weight words (unused with CONV)"),
    ("dw_table", 32, False, "DW requant table (unused with CONV)"),
    ("pw_weights", 32, False, "PW weight words"),
    ("pw_table", 32, False, "PW requant table (unused with RAW_OUT)"),
    ("add_table", 32, False, "RESIDUAL: ADD table (512 int64: input a's 256, then b's)"),
    ("exp_wbase", 16, False, "EXPAND: engine weight-memory word of the expand weights"),
    ("pw_wbase", 16, False, "engine weight-memory word of the PW weights"),
    # prefetch: while this layer runs, `pfN_words` engine weight words (dw_lanes x pw_cols
    # bytes) are read from `pfN_addr` into the engine's weight memory from word `pfN_base`
    # (segment 0, then 1), through the prefetch port `m_axi_pf`: the next descriptor's
    # weights, which it then finds loaded (EXP_LOADED, PW_LOADED)
    ("pf0_addr", 32, False, "prefetch segment 0: DDR address"),
    ("pf1_addr", 32, False, "prefetch segment 1: DDR address"),
    ("pf0_words", 16, False, "prefetch segment 0: engine weight words (0: none)"),
    ("pf0_base", 16, False, "prefetch segment 0: first engine weight-memory word"),
    ("pf1_words", 16, False, "prefetch segment 1: engine weight words (0: none)"),
    ("pf1_base", 16, False, "prefetch segment 1: first engine weight-memory word"),
])

#: descriptor fields holding DDR addresses (:data:`ADDRESS_ALIGN`-byte aligned; relative to
#: the program image in the compiler's ``Program.descriptors``)
ADDRESS_FIELDS = ("in_addr", "out_addr", "res_addr", "exp_weights", "exp_table", "dw_weights",
                  "dw_table", "pw_weights", "pw_table", "add_table", "pf0_addr", "pf1_addr")
#: alignment of every DDR address the accelerator is given (the program address and the
#: descriptor's :data:`ADDRESS_FIELDS`): one beat of the data bus; a misaligned one ends the
#: run with ``ErrorCode.MISALIGNED``
ADDRESS_ALIGN = BEAT_BYTES
#: entries of the residual ADD's table (``add_table``): 256 for input ``a`` (the PW output),
#: then 256 for ``b`` (the residual), each an int64 (one beat) at index ``value & 255``
ADD_TABLE_ENTRIES = 512
#: one requant-table record of ``L`` channels, field by field from byte 0: ``(name, bits)``,
#: each field ``L`` little-endian values (``bias int32[L]``, ``mult int32[L]``, ``shift
#: int8[L]``); the requantizers' table layout (``hw.requant.table_layout``) and the host's
#: packing (``host.packing.pack_requant_records``) are built from it
REQUANT_RECORD_FIELDS = (("bias", 32), ("mult", 32), ("shift", 8))
#: bytes of a requant-table record per channel
TABLE_RECORD_BYTES_PER_LANE = sum(bits for _, bits in REQUANT_RECORD_FIELDS) // 8


def table_record_bytes(lanes: int) -> int:
    """DDR bytes of one requant-table record of ``lanes`` channels:
    ``TABLE_RECORD_BYTES_PER_LANE * lanes``, padded with zero bytes to whole beats (the
    controller loads a record as whole beats; no padding when ``lanes`` is a multiple of 8)."""
    return -(-TABLE_RECORD_BYTES_PER_LANE * lanes // BEAT_BYTES) * BEAT_BYTES


class Table(enum.IntEnum):
    """The per-layer tables, in the order the controller loads them before a layer runs
    (those the descriptor's flags need and the controller does not hold). A table's DDR
    address is the descriptor field :attr:`field`; its words are :meth:`word_bytes` each."""
    EXP_WEIGHTS = 0     #: expand weights: ``dw_lanes x pw_cols`` int8 per engine word
    EXP_TABLE = 1       #: expand requant records of the engine requantizer's lanes
    DW_WEIGHTS = 2      #: DW weights: ``dw_taps x dw_lanes`` int8 per word
    DW_TABLE = 3        #: DW requant records of the DW requantizer's lanes
    PW_WEIGHTS = 4      #: PW (project) weights, as the expand ones
    PW_TABLE = 5        #: PW requant records, as the expand ones
    ADD_TABLE = 6       #: the residual ADD's :data:`ADD_TABLE_ENTRIES` int64 entries

    @property
    def field(self) -> str:
        """The descriptor field holding the table's DDR address."""
        return self.name.lower()

    def word_bytes(self, config: AcceleratorConfig) -> int:
        """Bytes of one word of this table (a whole number of beats)."""
        return {
            Table.EXP_WEIGHTS: config.dw_lanes * config.pw_cols,
            Table.EXP_TABLE: table_record_bytes(config.erq_lanes),
            Table.DW_WEIGHTS: config.dw_taps * config.dw_lanes,
            Table.DW_TABLE: table_record_bytes(config.requant_lanes),
            Table.PW_WEIGHTS: config.dw_lanes * config.pw_cols,
            Table.PW_TABLE: table_record_bytes(config.erq_lanes),
            Table.ADD_TABLE: BEAT_BYTES,
        }[self]
#: the prefetch segments' fields: (address, words, first word)
PREFETCH_SEGMENTS = (("pf0_addr", "pf0_words", "pf0_base"),
                     ("pf1_addr", "pf1_words", "pf1_base"))


#: Products of descriptor fields that the controller needs (transfer sizes, table lengths,
#: the line buffer's row length and :func:`descriptor_product_checks`), in the order its
#: shift-add unit computes them (``hw.products``), after :func:`descriptor_param_checks`
#: passed: ``(name, a, b)``, ``a`` and ``b`` a descriptor field, an earlier product (not the
#: one just before: the unit loads the next operands as it stores a product) or ``dw_cols``
#: (tap columns per pixel-group, ``dw_passes(k) * k``). ``b`` is the narrow operand: the
#: unit takes two of its bits per cycle.
DESCRIPTOR_PRODUCTS = (
    ("in_pixels", "in_h", "in_w"),
    ("out_pixels", "out_h", "out_w"),
    ("in_words", "in_pixels", "in_groups"),
    ("out_total_beats", "out_pixels", "out_beats"),
    ("out_span_beats", "out_pixels", "out_pitch"),
    ("kernel_taps", "kernel", "kernel"),
    ("lb_row_words", "exp_groups", "in_w"),
    ("conv_groups", "exp_groups", "kernel_taps"),
    ("lb_left_words", "exp_groups", "pad_left"),
    ("lb_dil_words", "exp_groups", "dilation"),
    ("dw_groups", "exp_groups", "depth_mult"),
    ("exp_weight_words", "exp_words", "in_groups"),
    ("dw_weight_words", "mid_groups", "dw_cols"),
    ("pw_weight_words", "mid_groups", "out_groups"),
)


def product_operand_bits(config: AcceleratorConfig) -> dict[str, int]:
    """Bits of every ``b`` operand of :data:`DESCRIPTOR_PRODUCTS` in a descriptor that passed
    :func:`descriptor_param_checks` on ``config``."""
    def bits(n: int) -> int:
        return max(1, n.bit_length())
    row_words = config.lb_row_capacity_words
    return {
        "in_w": bits(config.max_dim), "out_w": bits(config.max_dim),
        "in_groups": bits(row_words), "out_groups": bits(config.out_groups_max),
        "out_beats": bits(config.out_groups_max * config.pw_cols // 2),
        "out_pitch": DESCRIPTOR["out_pitch"].width,
        "kernel": bits(config.k_max), "kernel_taps": bits(config.k_max ** 2),
        "pad_left": bits(config.lb_window - 1),
        "dilation": bits(config.dilation_max), "depth_mult": bits(config.mid_groups_max),
        "dw_cols": bits(max(config.dw_passes(k) * k for k in range(1, config.k_max + 1))),
    }


def product_operands(d: dict, config: AcceleratorConfig) -> dict[str, int]:
    """Every operand and result of :data:`DESCRIPTOR_PRODUCTS` for the descriptor field values
    ``d`` (Python ints): the fields, ``dw_cols`` and the products."""
    values = dict(d, dw_cols=config.dw_passes(d["kernel"]) * d["kernel"])
    for name, a, b in DESCRIPTOR_PRODUCTS:
        values[name] = values[a] * values[b]
    return values


def descriptor_products(d: dict, config: AcceleratorConfig) -> dict[str, int]:
    """:data:`DESCRIPTOR_PRODUCTS` of the descriptor field values ``d`` (Python ints)."""
    values = product_operands(d, config)
    return {name: values[name] for name, _, _ in DESCRIPTOR_PRODUCTS}


def scale(x, c: int):
    """``x * c`` for a constant ``c >= 1`` as shifts and adds, so that the gateware has no
    multiplier for it (any product wider than 8 bits becomes a DSP48E1 in Yosys)."""
    if not isinstance(c, int) or c <= 0:
        raise ValueError(f"'c' must be a positive int, not {c!r}")
    terms = [x << i for i in range(c.bit_length()) if c >> i & 1]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _flag(d, bit):
    """Whether descriptor ``d`` has flag ``bit`` (a Python bool or a 1-bit Amaranth value)."""
    return (d["flags"] & bit) != 0


def _implies(cond, then):
    return (cond == 0) | then


def _all(conds):
    """Every one of ``conds`` (Python bools or Amaranth values); true when there are none."""
    result = True
    for cond in conds:
        result = result & cond
    return result


def table_loads(d, p, config: AcceleratorConfig) -> list[tuple]:
    """For each :class:`Table` in load order, ``(needed, words)``: whether the descriptor
    with fields ``d`` and :data:`DESCRIPTOR_PRODUCTS` ``p`` loads it, and its length in
    words. Python ints (``d`` a dict of field values, ``p`` :func:`descriptor_products`) or
    Amaranth values (the controller's fields and products) alike.

    The expand tables with ``EXPAND``, the expand weights unless ``EXP_LOADED``; the DW tables
    unless ``CONV``; the PW weights unless ``PW_LOADED``; the PW table unless ``RAW_OUT``; the
    ADD table with ``RESIDUAL``. A requant table has one record per requantizer chunk
    (``pw_cols / erq_lanes`` of an engine word, ``dw_lanes / requant_lanes`` of a DW one)."""
    expand, conv = _flag(d, DescFlag.EXPAND), _flag(d, DescFlag.CONV)
    q_chunks = config.pw_cols // config.erq_lanes
    p_chunks = config.dw_lanes // config.requant_lanes
    loads = {
        Table.EXP_WEIGHTS: (expand & (_flag(d, DescFlag.EXP_LOADED) == 0),
                            p["exp_weight_words"]),
        Table.EXP_TABLE: (expand, scale(d["exp_words"], q_chunks)),
        Table.DW_WEIGHTS: (conv == 0, p["dw_weight_words"]),
        Table.DW_TABLE: (conv == 0, scale(d["mid_groups"], p_chunks)),
        Table.PW_WEIGHTS: (_flag(d, DescFlag.PW_LOADED) == 0, p["pw_weight_words"]),
        Table.PW_TABLE: (_flag(d, DescFlag.RAW_OUT) == 0, scale(d["out_groups"], q_chunks)),
        Table.ADD_TABLE: (_flag(d, DescFlag.RESIDUAL), ADD_TABLE_ENTRIES),
    }
    return [loads[t] for t in Table]


def expand_words(config: AcceleratorConfig, exp_groups: int) -> int:
    """The engine's output words (``pw_cols`` channels) that cover ``exp_groups`` line-buffer
    groups (``dw_lanes`` channels) of an expand stage: the descriptor's ``exp_words``."""
    return -(-exp_groups * config.dw_lanes // config.pw_cols)


def out_last_beats_max(config: AcceleratorConfig) -> int:
    """The most beats a pixel's last engine word of output stores: its own (``pw_cols/8``)
    and, as filler, up to a line-buffer word's (``dw_lanes/8``) less one: a tile's
    channels padded to ``dw_lanes`` can end past its last engine word, never by a whole
    line-buffer word. Without filler when ``pw_cols == dw_lanes``."""
    Q, P = config.pw_cols // BEAT_BYTES, config.dw_lanes // BEAT_BYTES
    return Q if P == Q else Q + P - 1


def descriptor_param_checks(d, config: AcceleratorConfig) -> list[tuple[str, object]]:
    """Conditions a ``LAYER`` descriptor's fields ``d`` must meet on ``config`` before any
    product of them is formed (the hardware stops with ``ErrorCode.BAD_PARAMS`` otherwise);
    :func:`descriptor_product_checks` follows. Each is ``(rule, condition)``: ``rule`` says
    in words what is allowed (the driver names the first one a descriptor breaks).

    Written only with operators that mean the same on Python ints and on Amaranth values
    (``&``, ``|``, comparisons), so the gateware checker (``hw/top.py``) and the host's
    reference device evaluate these very rules.
    """
    def between(name, lo, hi):
        return f"{name} in {lo}..{hi}", (d[name] >= lo) & (d[name] <= hi)

    expand, conv = _flag(d, DescFlag.EXPAND), _flag(d, DescFlag.CONV)
    residual, pool = _flag(d, DescFlag.RESIDUAL), _flag(d, DescFlag.POOL)
    row_words = config.lb_row_capacity_words
    pad_limit = config.lb_window
    beats_max = config.out_groups_max * config.pw_cols // 2
    return [
        (f"flags below {2 * max(DescFlag)} (no unknown flag bits)",
         d["flags"] < 2 * max(DescFlag)),
        between("kernel", 1, config.k_max),
        between("stride", 1, 2),
        between("dilation", 1, config.dilation_max),
        (f"window (kernel-1)*dilation+1 at most lb_window = {config.lb_window} rows",
         _all(_implies(d["kernel"] == k, d["dilation"] <= config.dilation_limit(k))
              for k in range(2, config.k_max + 1)
              if config.dilation_limit(k) < config.dilation_max)),
        between("depth_mult", 1, config.mid_groups_max),
        between("in_groups", 1, row_words),
        between("exp_groups", 1, row_words),
        between("mid_groups", 1, config.mid_groups_max),
        between("out_groups", 1, config.out_groups_max),
        *(between(name, 1, config.max_dim) for name in ("in_h", "in_w", "out_h", "out_w")),
        (f"pad_top below {pad_limit}", d["pad_top"] < pad_limit),
        (f"pad_left below {pad_limit}", d["pad_left"] < pad_limit),
        (f"with EXPAND: in_groups at most {config.expand_in_groups_max}, exp_groups at most "
         f"{config.mid_groups_max}, no CONV",
         _implies(expand, (d["in_groups"] <= config.expand_in_groups_max)
                  & (d["exp_groups"] <= config.mid_groups_max) & (conv == 0))),
        ("without EXPAND: exp_groups equal to in_groups",
         _implies(expand == 0, d["exp_groups"] == d["in_groups"])),
        ("without EXPAND: exp_words equal to exp_groups",
         _implies(expand == 0, d["exp_words"] == d["exp_groups"])),
        (f"with EXPAND: exp_words in 1..{config.mid_groups_max}",
         _implies(expand, (d["exp_words"] >= 1) & (d["exp_words"] <= config.mid_groups_max))),
        between("out_beats", 1, beats_max),
        ("with CONV: depth_mult 1", _implies(conv, d["depth_mult"] == 1)),
        ("with POOL: kernel, stride, dilation and depth_mult 1, no padding, out_h and out_w 1, "
         "no EXPAND, CONV or RESIDUAL",
         _implies(pool, (d["kernel"] == 1) & (d["stride"] == 1) & (d["dilation"] == 1)
                  & (d["depth_mult"] == 1) & (d["pad_top"] == 0) & (d["pad_left"] == 0)
                  & (d["out_h"] == 1) & (d["out_w"] == 1) & (expand == 0) & (conv == 0)
                  & (residual == 0))),
        ("with RESIDUAL: add_out_shift in -31..0",
         _implies(residual, (d["add_out_shift"] >= -31) & (d["add_out_shift"] <= 0))),
    ]


def descriptor_product_checks(d, p, config: AcceleratorConfig) -> list[tuple[str, object]]:
    """Conditions on a descriptor's fields ``d`` and their products ``p``
    (:data:`DESCRIPTOR_PRODUCTS`) that complete :func:`descriptor_param_checks`; the same
    operators rule, and the same ``(rule, condition)`` pairs."""
    conv, residual, raw = (_flag(d, DescFlag.CONV), _flag(d, DescFlag.RESIDUAL),
                           _flag(d, DescFlag.RAW_OUT))
    P, Q = config.dw_lanes, config.pw_cols
    expand = _flag(d, DescFlag.EXPAND)
    pixel_beats = scale(d["out_groups"], Q // BEAT_BYTES)
    # a stored pixel ends in the last engine word or in the filler after it (whole words
    # when Q == P)
    filler = out_last_beats_max(config) - Q // BEAT_BYTES
    stored = ((d["out_beats"] == pixel_beats) if P == Q else
              (d["out_beats"] <= pixel_beats + filler)
              & (d["out_beats"] + Q // BEAT_BYTES > pixel_beats))
    return [
        (f"exp_groups * in_w at most {config.lb_row_capacity_words} (a line-buffer row)",
         p["lb_row_words"] <= config.lb_row_capacity_words),
        ("with CONV: mid_groups equal to exp_groups * kernel**2",
         _implies(conv, d["mid_groups"] == p["conv_groups"])),
        ("without CONV: mid_groups equal to exp_groups * depth_mult",
         _implies(conv == 0, d["mid_groups"] == p["dw_groups"])),
        # the engine's expand words cover the line buffer's groups, the last one partly
        (f"with EXPAND: exp_words * {Q} covers exp_groups * {P} channels, by less than a word",
         _implies(expand, (scale(d["exp_words"], Q) >= scale(d["exp_groups"], P))
                  & (scale(d["exp_words"], Q) < scale(d["exp_groups"], P) + Q))),
        (f"with RAW_OUT: no RESIDUAL, out_beats equal to out_groups * {Q // 2}, out_pitch at "
         "least out_beats",
         _implies(raw, (residual == 0) & (d["out_beats"] == (pixel_beats << 2))
                  & (d["out_pitch"] >= d["out_beats"]))),
        ("out_beats covering the last engine word of out_groups, out_pitch at least "
         "out_beats",
         _implies(raw == 0, stored & (d["out_pitch"] >= d["out_beats"]))),
        # the residual is read as one contiguous run
        ("with RESIDUAL: out_pitch equal to out_beats",
         _implies(residual, d["out_pitch"] == d["out_beats"])),
        # the DW weights fit their memory (by default any k <= k_max at mid_groups_max does)
        *([] if config.dw_weight_words is None else
          [(f"DW weight words at most {config.dw_weight_depth}",
            _implies(conv == 0, p["dw_weight_words"] <= config.dw_weight_depth))]),
        *_engine_weight_checks(d, p, config),
    ]


def _engine_weight_checks(d, p, config: AcceleratorConfig) -> list[tuple[str, object]]:
    """The engine's weight tables and prefetch segments lie inside its weight memory; the
    segments do not overwrite this layer's tables."""
    depth = config.engine_weight_depth
    expand = _flag(d, DescFlag.EXPAND)
    tables = [("exp_wbase", "exp_words * in_groups", expand, d["exp_wbase"],
               p["exp_weight_words"]),
              ("pw_wbase", "mid_groups * out_groups", 1, d["pw_wbase"], p["pw_weight_words"])]

    def apart(a, a_words, b, b_words):
        return (a + a_words <= b) | (b + b_words <= a)

    checks = [(f"{field} + {words} at most {depth} (the engine's weight words)",
               _implies(used, base + n <= depth)) for field, words, used, base, n in tables]
    checks.append(("the expand weights (from exp_wbase) and the PW weights (from pw_wbase) "
                   "apart in the engine's weight memory",
                   _implies(expand, apart(d["exp_wbase"], p["exp_weight_words"],
                                          d["pw_wbase"], p["pw_weight_words"]))))
    for _, words, base in PREFETCH_SEGMENTS:
        seg = (d[base], d[words])
        checks.append((f"{base} + {words} at most {depth}", d[base] + d[words] <= depth))
        checks.extend((f"the prefetch's {base} + {words} words apart from the weights at "
                       f"{field}", _implies(used, apart(*seg, b, n)))
                      for field, _, used, b, n in tables)
    return checks


def descriptor_extents(d, p, config: AcceleratorConfig) -> list[tuple[str, object, object]]:
    """The DDR regions a descriptor with fields ``d`` and products ``p`` reads or writes:
    ``(address field, used, bytes)`` for each of :data:`ADDRESS_FIELDS`, ``used`` whether its
    flags make the accelerator touch it. Python ints or Amaranth values alike. The output's
    region runs from ``out_addr`` to the end of its last pixel (``out_pitch`` beats apart).
    Sizes are beats times 8, the beats written as the controller counts its transfers (the
    same shift-adds, which the gateware then shares)."""
    P, Q = config.dw_lanes, config.pw_cols
    tables = {t.field: (needed, scale(words, t.word_bytes(config) // BEAT_BYTES) << 3)
              for t, (needed, words) in zip(Table, table_loads(d, p, config), strict=True)}
    regions = {
        "in_addr": (1, scale(p["in_words"], P // BEAT_BYTES) << 3),
        "out_addr": (1, (p["out_span_beats"] - d["out_pitch"] + d["out_beats"]) << 3),
        "res_addr": (_flag(d, DescFlag.RESIDUAL), p["out_total_beats"] << 3),
        **tables,
        **{addr: (d[words] != 0, scale(d[words], P * Q)) for addr, words, _ in PREFETCH_SEGMENTS},
    }
    assert tuple(regions) == ADDRESS_FIELDS, tuple(regions)
    return [(name, *regions[name]) for name in ADDRESS_FIELDS]


def window_checks(d, p, config: AcceleratorConfig, lo, hi) -> list[tuple[str, object]]:
    """Each region of :func:`descriptor_extents` the descriptor uses lies in the DDR window
    of bytes ``lo..hi`` (``WINDOW_LO``, ``WINDOW_HI``): ``(address field, condition)``. (Its
    end, exclusive, at most ``hi + 1``: every used region has a byte at least.)"""
    return [(name, _implies(used, (d[name] >= lo) & (d[name] + nbytes <= hi + 1)))
            for name, used, nbytes in descriptor_extents(d, p, config)]


def export(config: AcceleratorConfig | None = None) -> dict:
    """Machine-readable register map, descriptor layout and enums (for JSON)."""
    def fields(fs):
        return [{"name": f.name, "lsb": f.lsb, "width": f.width, "signed": f.signed,
                 "doc": f.doc} for f in fs]
    out = {
        "version": HW_VERSION,
        "registers": [{"name": r.name, "offset": r.offset, "access": r.access, "doc": r.doc,
                       "fields": fields(r.fields)} for r in REGISTERS],
        "descriptor": {"size": DESCRIPTOR.size, "fields": fields(DESCRIPTOR.fields)},
        "opcodes": {o.name: int(o) for o in Opcode},
        "flags": {f.name: int(f) for f in DescFlag},
        "errors": {e.name: int(e) for e in ErrorCode},
    }
    if config is not None:
        out["config"] = config.to_dict()
        out["capabilities"] = capability_values(config)
    return out


def export_json(config: AcceleratorConfig | None = None) -> str:
    return json.dumps(export(config), indent=2)


def markdown() -> str:
    """The register map, the descriptor layout and the enums as Markdown tables: the
    section of docs/ARCHITECTURE.md between its ``layout.markdown()`` markers (a test keeps
    the two equal; ``dwsep info --markdown`` prints it)."""
    def bits(f: Field) -> str:
        return f"[{f.lsb + f.width - 1}:{f.lsb}]" if f.width > 1 else f"[{f.lsb}]"

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    lines = [f"Hardware version {HW_VERSION}; `ID.magic` = `{ID_MAGIC:#x}`.", "",
             "**Registers** (AXI4-Lite, 32-bit words):", "",
             "| offset | register | access | fields | |", "|---|---|---|---|---|"]
    for r in REGISTERS:
        fields = ", ".join(f"`{f.name}{bits(f)}`" for f in r.fields)
        lines.append(f"| `{r.offset:#04x}` | `{r.name}` | {r.access} | {fields} | "
                     f"{cell(r.doc)} |")
    lines += ["", f"**Layer descriptor** ({DESCRIPTOR.size} bytes, "
                  f"{DESCRIPTOR.size // BEAT_BYTES} beats, little-endian; bit offsets "
                  "from byte 0):", "",
              "| bits | field | signed | |", "|---|---|---|---|"]
    for f in DESCRIPTOR.fields:
        lines.append(f"| {bits(f)} | `{f.name}` | {'yes' if f.signed else ''} | "
                     f"{cell(f.doc)} |")
    for title, enum_ in (("Opcode", Opcode), ("DescFlag", DescFlag), ("ErrorCode", ErrorCode),
                         ("Table (load order)", Table)):
        values = ", ".join(f"`{e.name}` = {int(e)}" for e in enum_)
        lines += ["", f"**{title}**: {values}."]
    return "\n".join(lines) + "\n"
