"""Compiler: :class:`~dwsep.host.graph.Graph` -> :class:`Program` (``LAYER`` descriptors,
packed blobs, DDR plan, host steps), as a pipeline of passes, each a function of explicit
inputs to a result of its own (no state shared between them), runnable and tested alone:

1. :func:`.match.match_units` (graph -> :class:`.match.Matched`): operators grouped into
   units, the layers the hardware runs (the patterns are listed in :mod:`.match`);
2. :func:`.tile.plan_slices` (units -> :class:`.tile.Sliced`): pool and FC inputs cut into
   channel slices (output tiles are cut as each unit is emitted, :func:`.tile.tile_channels`);
3. :func:`.emit.emit_descriptors` (units -> :class:`.emit.Emitted`): one descriptor per input
   slice and output tile, address fields naming regions; packed weight and table blobs;
   the layer report and host steps;
4. :func:`.plan.plan_engine_weights` (descriptors -> descriptors): the engine's weight memory,
   what is held, prefetched or loaded;
5. :func:`.plan.plan_memory` (-> :class:`Program`): the DDR plan and linking.

:func:`compile_model` runs them in that order. The program's data structures are in
:mod:`.program`, the operand checks in :mod:`.checks`, the units in :mod:`.units`.

Anything the hardware cannot run raises :class:`UnsupportedModelError` with a one-line
message naming the operator (index, opcode, output tensor), the value and the limit; this
includes a requant-table channel whose requantizer input could leave
``REQUANT_INPUT_BITS`` for some int8 input (:func:`check_requant_inputs`) and a weight of the
expand or pointwise array outside ``-PACKED_WEIGHT_MAX..PACKED_WEIGHT_MAX``
(:func:`check_packed_weights`).
"""

from __future__ import annotations

from dataclasses import replace

from ...hw.config import AcceleratorConfig, get_config
from ..graph import Graph, UnsupportedModelError
from .checks import PACKED_WEIGHT_MAX, check_packed_weights, check_requant_inputs
from .emit import Emitted, emit_descriptors
from .match import Matched, match_units
from .match_conv import space_to_depth_conv
from .match_pool import exact_division_multiplier
from .plan import plan_engine_weights, plan_memory
from .program import ALIGN, Blob, HostStep, Program, TensorInfo
from .tile import Sliced, plan_slices

__all__ = ["compile_model", "Program", "TensorInfo", "Blob", "HostStep",
           "UnsupportedModelError", "ALIGN", "exact_division_multiplier",
           "check_requant_inputs", "check_packed_weights", "PACKED_WEIGHT_MAX",
           "space_to_depth_conv", "match_units", "Matched", "plan_slices", "Sliced",
           "emit_descriptors", "Emitted", "plan_engine_weights", "plan_memory"]


def compile_model(graph: Graph, config: str | AcceleratorConfig) -> Program:
    """Compile ``graph`` for ``config``: the passes in order.

    Raises
    ------
    UnsupportedModelError
        The model uses an op, dtype, parameter or size the hardware does not run; the
        one-line message names the operator, the value and the limit.
    """
    cfg = get_config(config)
    matched = match_units(graph, cfg)
    sliced = plan_slices(graph, cfg, matched.units)
    emitted = emit_descriptors(graph, cfg, matched, sliced)
    emitted = replace(emitted, jobs=plan_engine_weights(emitted.jobs, cfg))
    return plan_memory(graph, cfg, emitted)
