"""Helpers and constants shared by several test modules (imported as ``helpers``: pytest puts
``tests/`` on ``sys.path`` for the conftest beside it, in every xdist worker too). Fixtures
live in ``conftest.py``; a test module imports no other test module."""

from __future__ import annotations

import dataclasses

import numpy as np

from dwsep.host import imagenet
from dwsep.host.graph import Graph, Operator
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model, random_mobilenet_spec
from dwsep.hw.config import get_config

TINY = get_config("tiny")
PYNQ_Z2 = get_config("pynq-z2")
#: tiny with a small mid memory: a wide head is stored in slices, pooled slice by slice, and
#: the FC adds its partial sums on the host
SLICED = dataclasses.replace(TINY, name="tiny-sliced", mid_channels_max=72,
                             out_channels_max=16)
#: a 16 x 24 engine behind 16 DW lanes (``pw_cols != dw_lanes``), not in the top level yet
P16Q24 = dataclasses.replace(TINY, name="p16q24", dw_lanes=16, pw_rows=16, pw_cols=24,
                             lb_channels=128, out_channels_max=96, requant_lanes=8,
                             add_lanes=2)


def random_int8(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform int8 with both extremes (-128, 127) forced into random positions."""
    a = rng.integers(-128, 128, size=shape, dtype=np.int8)
    flat = a.reshape(-1)
    if not flat.size:
        return a
    flat[rng.integers(flat.size, size=max(2, flat.size // 16))] = -128
    flat[rng.integers(flat.size)] = 127
    return a


def calibration_photos() -> list:
    """The offline sample photos except ``grace_hopper``, which stays held out for top-1."""
    return [p for name, p in imagenet.sample_images().items() if name != "grace_hopper"]


def chain(n: int, seed: int) -> Graph:
    """``n`` random layers where each PW output feeds the next DW (renamed ``l<i>/...``)."""
    rng = np.random.default_rng(seed)
    c, tensors, ops, prev = int(rng.integers(1, 20)), {}, [], None
    for i in range(n):
        c_out = int(rng.integers(1, 20))
        spec = LayerSpec(h=9, w=11, c=c, depth_multiplier=int(rng.integers(1, 4)), kernel=3,
                         stride=1, dilation=1, padding="SAME", dw_activation="RELU6",
                         c_out=c_out, pw_activation="NONE", seed=seed * 10 + i)
        g = read_tflite(dwsep_layer_model(spec))
        rename = {name: f"l{i}/{name}" for name in g.tensors}
        if prev is not None:
            rename["input"] = prev.name
            # Layer i reads the previous output with that tensor's quantization.
            g.tensors["input"] = prev
        for name, t in g.tensors.items():
            t.name = rename[name]
            tensors[t.name] = t
        for op in g.operators:
            ops.append(Operator(op.opcode, [rename[x] for x in op.inputs],
                                [rename[x] for x in op.outputs], op.options, len(ops)))
        prev, c = tensors[rename["pw/out"]], c_out
    return Graph(tensors, ops, ["l0/input"], [prev.name])


def network(config, seed: int, limits: dict):
    """A random MobileNet-like spec whose last feature map fits the pooling kernel (the stem
    and each stride-2 block halve it, rounding up); on ``SLICED`` the head is wider than
    the mid memory; on configs other than ``TINY`` odd seeds have more classes than
    ``out_channels_max``."""
    rng = np.random.default_rng(seed)
    spec = random_mobilenet_spec(rng, **limits)
    n2 = 1 + sum(b.stride == 2 for b in spec.blocks)
    limit = config.k_max << n2
    spec = dataclasses.replace(spec, h=min(spec.h, limit), w=min(spec.w, limit))
    if config is SLICED:
        spec = dataclasses.replace(spec, head_channels=int(rng.integers(73, 120)))
    if config is not TINY and seed % 2:
        # more classes than an output tile: the pool runs alone, the FC reads its vector
        spec = dataclasses.replace(spec, classes=int(rng.integers(
            config.out_channels_max + 1, 3 * config.out_channels_max)))
    return spec
