"""The controller's multiplier: products of descriptor fields, one after another, by one
shift-add unit (no DSP48E1, short paths)."""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .layout import DESCRIPTOR, DESCRIPTOR_PRODUCTS, product_operand_bits, product_operands

__all__ = ["DescriptorProducts", "BITS_PER_CYCLE", "PRODUCT_BITS", "product_cycles"]

#: multiplier bits consumed per cycle
BITS_PER_CYCLE = 2

#: width of every product (a descriptor that passed the range checks keeps each below 2**32)
PRODUCT_BITS = 32


def _steps(b: int) -> int:
    return max(1, -(-b.bit_length() // BITS_PER_CYCLE))


def product_cycles(d: dict, config: AcceleratorConfig) -> int:
    """Cycles from the ``start`` cycle to the one in which :class:`DescriptorProducts`'s
    ``done`` is high for the descriptor field values ``d``: each product takes one cycle
    per ``BITS_PER_CYCLE`` bits of its ``b`` operand, at least one, and ``done`` follows
    the last one's store by a cycle."""
    values = product_operands(d, config)
    return sum(_steps(values[b]) for _, _, b in DESCRIPTOR_PRODUCTS) + 1


def product_layout() -> data.StructLayout:
    """The products, ``PRODUCT_BITS`` each, named as in ``hw.layout.DESCRIPTOR_PRODUCTS``."""
    return data.StructLayout({name: unsigned(PRODUCT_BITS) for name, _, _ in DESCRIPTOR_PRODUCTS})


class DescriptorProducts(wiring.Component):
    """Computes ``hw.layout.DESCRIPTOR_PRODUCTS`` of a descriptor in sequence.

    A pulse on ``start`` loads the first product's operands; then each cycle adds the
    partial products of the next ``BITS_PER_CYCLE`` bits of ``b`` (``acc += a * b[1:0]``,
    ``a <<= 2``, ``b >>= 2``), and the cycle in which no bit of ``b`` is left stores the
    product and loads the next one's operands. ``done`` is a register, high in the cycle
    after the last product is stored, :func:`product_cycles` cycles after the ``start``
    cycle: the products are valid from the ``done`` cycle until the next ``start``.

    The ``b`` operands are taken with the widths of ``hw.layout.product_operand_bits``:
    the products are right for a descriptor that passed ``descriptor_param_checks`` (the
    controller runs this unit only then).

    Members
    -------
    desc : ``In(unsigned(8 * DESCRIPTOR.size))``
        The descriptor; held from the cycle before ``start`` to ``done``.
    start : ``In(1)``
    busy : ``Out(1)``
    done : ``Out(1)``
    products : ``Out(product_layout())``
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"'config' must be an AcceleratorConfig, not {config!r}")
        self.config = config
        names = [name for name, _, _ in DESCRIPTOR_PRODUCTS]
        for i, (name, a, b) in enumerate(DESCRIPTOR_PRODUCTS):
            # the next operands load as a product is stored
            if i and names[i - 1] in (a, b):
                raise ValueError(f"product {name!r} uses the one just before it")
        super().__init__({
            "desc": In(unsigned(8 * DESCRIPTOR.size)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "products": Out(product_layout()),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        bits = product_operand_bits(cfg)
        b_width = max(bits.values())

        kernel = DESCRIPTOR.value(self.desc, "kernel")
        operands = {
            "dw_cols": Array(Const(cfg.dw_passes(k) * k if k else 0, bits["dw_cols"])
                             for k in range(2 ** len(kernel)))[kernel],
            **{name: getattr(self.products, name) for name, _, _ in DESCRIPTOR_PRODUCTS},
        }

        def operand(name, width=None):
            value = operands[name] if name in operands else DESCRIPTOR.value(self.desc, name)
            return value if width is None else value[:width]

        n = len(DESCRIPTOR_PRODUCTS)
        a_ops = Array(operand(a) for _, a, _ in DESCRIPTOR_PRODUCTS)
        b_ops = Array(operand(b, bits[b]) for _, _, b in DESCRIPTOR_PRODUCTS)

        index = Signal(range(n))       # the product being formed
        following = Signal(range(n + 1))  # index + 1, kept apart from index (no adder in
        acc = Signal(PRODUCT_BITS)     # the operand mux's path)
        a = Signal(PRODUCT_BITS)
        b = Signal(b_width)

        step = Signal(PRODUCT_BITS)
        m.d.comb += step.eq(acc + Mux(b[0], a, 0) + Mux(b[1], a << 1, 0))
        rest = b >> BITS_PER_CYCLE
        last_step = rest == 0
        m.d.sync += self.done.eq(self.busy & last_step & (index == n - 1))

        def load(i):
            return [a.eq(a_ops[i]), b.eq(b_ops[i]), acc.eq(0)]

        with m.If(~self.busy):
            # the first operands load in every idle cycle: `start` only sets `busy` (it is
            # the end of the controller's checks, a long path)
            m.d.sync += [index.eq(0), following.eq(1), *load(0)]
            with m.If(self.start):
                m.d.sync += self.busy.eq(1)
        with m.Else():
            with m.If(last_step):
                with m.Switch(index):
                    for i, (name, _, _) in enumerate(DESCRIPTOR_PRODUCTS):
                        with m.Case(i):
                            m.d.sync += getattr(self.products, name).eq(step)
                with m.If(index == n - 1):
                    m.d.sync += self.busy.eq(0)
                with m.Else():
                    m.d.sync += [index.eq(following), following.eq(following + 1),
                                 *load(following)]
            with m.Else():
                m.d.sync += [acc.eq(step), a.eq(a << BITS_PER_CYCLE), b.eq(rest)]
        return m
