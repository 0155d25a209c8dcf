"""Pass 2, tiling and slicing: :func:`plan_slices` cuts the inputs of pools and FCs into
channel slices; :func:`tile_channels` cuts a unit's output channels into tiles (one descriptor
each), which :func:`.emit.emit_descriptors` applies to every unit (:func:`output_tiles`).

PW outputs wider than ``out_channels_max`` are tiled by output channels (one descriptor per
tile, ``out_pitch`` the whole tensor). A pool or FC input wider than ``mid_channels_max``
(or than the DW weight memory holds at the pool's window: ``dw_weight_words``), and a
pool without an FC wider than ``out_channels_max`` whose producer can, is stored as
separate channel slices (its producer's tiles) and pooled slice by slice; an FC's one-pixel
input is read in slices where it lies. The FC reduction is split over the slices: each
slice writes int32 partial sums that the ``fc_requant`` host step adds before requantizing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ...hw.config import AcceleratorConfig
from .. import packing
from ..graph import Graph
from .checks import fail
from .units import Unit, engine_words


@dataclass(frozen=True)
class Sliced:
    """What :func:`plan_slices` decided.

    Attributes
    ----------
    units:
        The units, each with ``slices`` (its input's channel slices ``(first, end)``) set
        where its input is read in slices, else as given.
    parts:
        The tensors stored as separate slices -> those slices; their producers write each
        as an output tile of its own.
    """
    units: list[Unit]
    parts: dict[str, list[tuple[int, int]]]


def plan_slices(graph: Graph, cfg: AcceleratorConfig, units: list[Unit]) -> Sliced:
    """Cut the inputs of pools and FCs into channel slices, each read by its own
    descriptors.

    A pool or FC input wider than ``M``, ``mid_channels_max`` or fewer where the DW weight
    memory holds fewer at its window (``AcceleratorConfig.dw_channels_max``), must be
    sliced. A pool without an FC wider than ``out_channels_max`` is sliced too when its
    producer can store the slices: its output tiles then read their own channels, not the
    whole input each. An FC input of one pixel is sliced where it lies (a slice of it is
    a contiguous run of bytes), ``M`` channels a slice. Any other input is stored as
    separate tensors of ``S = min(M, out_channels_max)`` channels rounded
    down to ``lcm(P, Q)`` (a pool's output slices then start on a PW output group),
    which its producer writes as its output tiles (``parts``).
    """
    P, Q = cfg.dw_lanes, cfg.pw_cols
    units = list(units)
    producers = {u.output: i for i, u in enumerate(units)}
    parts: dict[str, list[tuple[int, int]]] = {}
    readers: dict[str, list[Unit]] = {}
    for u in units:
        for name in (u.input, u.residual):
            if name is not None:
                readers.setdefault(name, []).append(u)
    for i, u in enumerate(units):
        c, op = u.geo.c, u.ops[0]
        most = cfg.mid_channels_max if u.conv else cfg.dw_channels_max(u.geo.k)
        wide = packing.padded(c, P) > most
        if wide and (u.conv or u.expand is not None or u.depth_mult != 1
                     or (u.fc is None and not u.is_pool)):
            raise fail(op, f"{c} channels exceed mid_channels_max="
                           f"{cfg.mid_channels_max} of config {cfg.name!r}")
        if not wide and not (u.is_pool and u.fc is None and c > cfg.out_channels_max):
            continue
        if u.fc is not None and u.geo.h * u.geo.w == 1:
            units[i] = replace(u, slices=[(c0, min(c0 + most, c)) for c0 in range(0, c, most)])
            continue
        step = math.lcm(P, Q)
        size = min(most, cfg.out_channels_max) // step * step
        src = units[producers[u.input]] if u.input in producers else None
        if (src is None or src.residual is not None or src.fc is not None
                or len(readers.get(u.input, [])) != 1
                or graph.outputs[0] == u.input or src.slices is not None):
            if not wide:
                continue    # the pool's output tiles read the whole input
            limit = (f"mid_channels_max={cfg.mid_channels_max}"
                     if most == cfg.mid_channels_max else
                     f"the {most} whose {u.geo.k}x{u.geo.k} DW weights fit "
                     f"dw_weight_words={cfg.dw_weight_depth}")
            raise fail(op, f"input {u.input!r} has {c} channels, more than {limit} "
                           f"of config {cfg.name!r}, and cannot be stored in slices (it "
                           "is the model input or output, read twice, or made by an ADD)")
        # the producer's output tiles: sized as its own would be
        _, mid_groups, exp_words = engine_words(cfg, src,
                                                packing.padded(src.in_c, P) // P)
        parts[u.input] = tile_channels(cfg, src, c, size, step, mid_groups, exp_words)
        units[i] = replace(u, slices=parts[u.input])
    return Sliced(units, parts)


def output_tiles(cfg: AcceleratorConfig, u: Unit, c_out: int, out_parts, mid_groups: int,
                 exp_words: int) -> list[tuple[int, int]]:
    """Output tiles ``(first, end)`` by channel (:func:`tile_channels`): ``out_parts`` if the
    output is stored in parts, else tiles of at most ``out_channels_max`` channels.
    Not prefetch-sized for an FC (its tiles are short runs bound by their weights'
    reads, which a load through both ports does faster than a prefetch through one) nor
    beside a residual (the ADD reads the residual as one run: one tile)."""
    if out_parts is not None:
        return list(out_parts)
    return tile_channels(cfg, u, c_out, cfg.out_channels_max, cfg.pw_cols, mid_groups,
                         exp_words, prefetch=u.fc is None and u.residual is None)


def tile_channels(cfg: AcceleratorConfig, u: Unit, c_out: int, most: int, step: int,
                  mid_groups: int, exp_words: int, *, prefetch: bool = True
                  ) -> list[tuple[int, int]]:
    """``c_out`` output channels of unit ``u`` in tiles ``(first, end)`` of whole
    ``step``s (a multiple of ``pw_cols``), at most ``most`` channels each: as few as
    that allows, their sizes within one step of each other (a short last tile would
    repeat the expand and DW stages for little PW work), and, with ``prefetch``, for a
    unit without an expand stage (each tile of an expanding unit repeats its expand on
    the engine: more engine cycles than the prefetch saves on MobileNetV2's 14x14
    -> 7x7 block, 15 k of 1.43 M by the cycle model) and while the DW stage keeps up
    with the engine (a tile has at least as many PW groups as the DW takes cycles a
    word), more of them if that lets two consecutive tiles' PW weights (``mid_groups``
    words a PW group) fit in the engine's weight memory beside ``exp_words`` of expand
    weights: then each tile's weights are read while the one before runs
    (:func:`.plan.plan_engine_weights`). Always as many as it takes for one tile's weights
    and the expand weights to fit the memory (``engine_weight_words``)."""
    depth = cfg.engine_weight_depth
    steps, most_steps, groups = -(-c_out // step), most // step, step // cfg.pw_cols

    def pw_words(n: int) -> int:    # of the largest of n tiles
        return mid_groups * groups * -(-steps // n)

    n = -(-steps // most_steps)
    while n < steps and exp_words + pw_words(n) > depth:
        n += 1      # a tile's weights must fit the engine's memory
    if exp_words + pw_words(n) > depth:
        raise fail(u.ops[0], f"{mid_groups} x {groups} PW weight words of one output "
                             f"tile and {exp_words} expand words exceed "
                             f"engine_weight_words={depth} of config {cfg.name!r}")
    dw_cycles = 1 if u.conv else cfg.dw_passes(u.geo.k) * u.geo.k
    while (prefetch and u.expand is None and n < steps
           and steps // (n + 1) * groups >= dw_cycles
           and exp_words + 2 * pw_words(n) > depth):
        n += 1
    tiles, a = [], 0
    for i in range(n):
        size = (steps // n + (i < steps % n)) * step
        tiles.append((a, min(a + size, c_out)))
        a += size
    return tiles
