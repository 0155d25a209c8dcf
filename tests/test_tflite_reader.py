"""host.tflite_reader on models written by host.tflite_writer (and checked loadable by LiteRT),
plus corrupt and unsupported files."""

import contextlib
import copy

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from dwsep.host.graph import UnsupportedModelError
from dwsep.host.tflite_reader import ModelFormatError, read_tflite
from dwsep.host.tflite_writer import (
    LayerSpec,
    ModelBuilder,
    dwsep_layer_model,
    layer_tensors,
    random_layer_spec,
    single_op_model,
)
from dwsep.sim.oracle import litert_run

SPEC = LayerSpec(h=9, w=7, c=5, depth_multiplier=2, kernel=3, stride=2, dilation=2,
                 padding="SAME", dw_activation="RELU6", c_out=6, pw_activation="RELU", seed=42)


def test_dwsep_layer_shapes_quantization_and_options():
    g = read_tflite(dwsep_layer_model(SPEC))
    p = layer_tensors(SPEC)
    assert [op.opcode for op in g.operators] == ["DEPTHWISE_CONV_2D", "CONV_2D"]
    assert g.inputs == ["input"] and g.outputs == ["pw/out"]
    dw, pw = g.operators
    assert dw.inputs == ["input", "dw/weights", "dw/bias"] and dw.outputs == ["dw/out"]
    assert pw.inputs == ["dw/out", "pw/weights", "pw/bias"] and pw.outputs == ["pw/out"]
    assert dw.options == dict(padding="SAME", stride_h=2, stride_w=2, dilation_h=2,
                              dilation_w=2, depth_multiplier=2, activation="RELU6")
    assert pw.options == dict(padding="VALID", stride_h=1, stride_w=1, dilation_h=1,
                              dilation_w=1, activation="RELU", quantized_bias_type=0)

    x = g.tensor("input")
    assert (x.shape, x.dtype, x.is_constant) == ((1, 9, 7, 5), "int8", False)
    assert x.scale.dtype == np.float32 and x.zero_point.dtype == np.int64
    assert x.per_tensor_scale == np.float32(p["in_scale"])
    assert x.per_tensor_zero_point == p["in_zp"]

    w = g.tensor("dw/weights")
    assert (w.shape, w.dtype, w.quantized_dimension) == ((1, 3, 3, 10), "int8", 3)
    assert w.data.dtype == np.int8 and np.array_equal(w.data, p["dw"]["w"])
    assert np.array_equal(w.scale, p["dw"]["scales"]) and not w.zero_point.any()
    assert w.zero_point.shape == (10,)
    b = g.tensor("dw/bias")
    assert (b.shape, b.dtype) == ((10,), "int32") and np.array_equal(b.data, p["dw"]["bias"])
    assert np.array_equal(b.scale, (p["in_scale"] * p["dw"]["scales"].astype(np.float64))
                          .astype(np.float32))
    assert g.tensor("dw/out").shape == (1, 5, 4, 10)   # SAME, stride 2: ceil(9/2), ceil(7/2)

    pw_w = g.tensor("pw/weights")
    assert (pw_w.shape, pw_w.quantized_dimension) == ((6, 1, 1, 10), 0)
    assert np.array_equal(pw_w.data, p["pw"]["w"])
    out = g.tensor("pw/out")
    assert out.shape == (1, 5, 4, 6)
    assert out.per_tensor_scale == np.float32(p["pw"]["out_scale"])


@pytest.mark.parametrize("seed", range(20))
def test_random_specs_are_valid_models(seed):
    spec = random_layer_spec(np.random.default_rng(seed), extreme_fraction=0.5)
    for model in (dwsep_layer_model(spec), single_op_model(spec, "CONV_2D")):
        g = read_tflite(model)
        x = np.zeros(g.input.shape, np.int8)
        assert litert_run(model, x).shape == g.output.shape, spec


def test_other_ops_round_trip_and_run_in_litert():
    """A float -> QUANTIZE -> PAD -> AVERAGE_POOL_2D -> ADD -> MEAN -> FULLY_CONNECTED ->
    RESHAPE -> SOFTMAX -> DEQUANTIZE chain: LiteRT accepts it, the reader returns the options
    the writer was given."""
    rng = np.random.default_rng(0)
    mb = ModelBuilder()
    s, zp = 0.05, -3
    x = mb.add_tensor("x", (1, 6, 6, 4), "float32")
    q = mb.add_tensor("q", (1, 6, 6, 4), "int8", s, zp)
    pads = mb.add_tensor("pads", (4, 2), "int32", data=[[0, 0], [1, 1], [1, 1], [0, 0]])
    padded = mb.add_tensor("padded", (1, 8, 8, 4), "int8", s, zp)
    pooled = mb.add_tensor("pooled", (1, 4, 4, 4), "int8", s, zp)
    added = mb.add_tensor("added", (1, 4, 4, 4), "int8", 0.1, 5)
    axes = mb.add_tensor("axes", (2,), "int32", data=[1, 2])
    mean = mb.add_tensor("mean", (1, 4), "int8", 0.08, 2)
    fc_w = mb.add_tensor("fc/weights", (3, 4), "int8", 0.02, 0, 0,
                         rng.integers(-127, 128, (3, 4)))
    fc_b = mb.add_tensor("fc/bias", (3,), "int32", 0.08 * 0.02, 0, 0, [10, -20, 30])
    fc = mb.add_tensor("fc", (1, 3), "int8", 0.03, -1)
    shape = mb.add_tensor("shape", (2,), "int32", data=[1, 3])
    reshaped = mb.add_tensor("reshaped", (1, 3), "int8", 0.03, -1)
    soft = mb.add_tensor("soft", (1, 3), "int8", 1 / 256, -128)
    y = mb.add_tensor("y", (1, 3), "float32")
    ops = [
        ("QUANTIZE", [x], [q], {}),
        ("PAD", [q, pads], [padded], {}),
        ("AVERAGE_POOL_2D", [padded], [pooled],
         dict(padding="VALID", stride_h=2, stride_w=2, filter_h=2, filter_w=2,
              activation="NONE")),
        ("ADD", [pooled, pooled], [added], dict(activation="RELU", pot_scale_int16=True)),
        ("MEAN", [added, axes], [mean], dict(keep_dims=False)),
        ("FULLY_CONNECTED", [mean, fc_w, fc_b], [fc],
         dict(activation="RELU6", weights_format=0, keep_num_dims=False,
              asymmetric_quantize_inputs=False, quantized_bias_type=0)),
        ("RESHAPE", [fc, shape], [reshaped], dict(new_shape=[1, 3])),
        ("SOFTMAX", [reshaped], [soft], dict(beta=1.0)),
        ("DEQUANTIZE", [soft], [y], {}),
    ]
    for opcode, inputs, outputs, options in ops:
        mb.add_operator(opcode, inputs, outputs, **options)
    mb.inputs, mb.outputs = [x], [y]
    model = mb.finish()

    g = read_tflite(model)
    assert [(op.opcode, op.options) for op in g.operators] == [
        (opcode, options) for opcode, _, _, options in ops]
    assert g.tensor("pads").data.tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]
    assert g.tensor("x").dtype == "float32" and g.tensor("x").scale.size == 0

    probs = litert_run(model, rng.normal(size=(1, 6, 6, 4)).astype(np.float32))
    assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 0.02


def test_float_model_reads():
    """Float models import (the compiler rejects them, naming the tensor)."""
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 4, 4, 2), "float32")
    w = mb.add_tensor("w", (3, 1, 1, 2), "float32", data=np.ones((3, 1, 1, 2)))
    b = mb.add_tensor("b", (3,), "float32", data=[0.5, 0, -1])
    y = mb.add_tensor("y", (1, 4, 4, 3), "float32")
    mb.add_operator("CONV_2D", [x, w, b], [y])
    mb.inputs, mb.outputs = [x], [y]
    model = mb.finish()
    g = read_tflite(model)
    assert g.operators[0].inputs == ["x", "w", "b"]
    assert g.tensor("w").data.dtype == np.float32 and g.tensor("w").data.shape == (3, 1, 1, 2)
    ones = np.ones((1, 4, 4, 2), np.float32)
    assert np.array_equal(litert_run(model, ones), np.broadcast_to(
        np.array([2.5, 2, 1], np.float32), (1, 4, 4, 3)))


def test_absent_optional_input_is_none():
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 4), "float32")
    w = mb.add_tensor("w", (2, 4), "float32", data=[[1, 2, 3, 4], [0, 0, 0, -1]])
    y = mb.add_tensor("y", (1, 2), "float32")
    mb.add_operator("FULLY_CONNECTED", [x, w, -1], [y])
    mb.inputs, mb.outputs = [x], [y]
    model = mb.finish()
    assert read_tflite(model).operators[0].inputs == ["x", "w", None]
    out = litert_run(model, np.array([[1, 1, 1, 2]], np.float32))
    assert out.tolist() == [[14.0, -2.0]]


def test_repeated_and_empty_names_become_unique():
    mb = ModelBuilder()
    a = mb.add_tensor("t", (1, 2, 2, 1), "int8", 0.1, 0)
    b = mb.add_tensor("t:1", (1, 2, 2, 1), "int8", 0.1, 0)
    c = mb.add_tensor("t", (1, 2, 2, 1), "int8", 0.1, 0)
    d = mb.add_tensor("", (1, 2, 2, 1), "int8", 0.1, 0)
    mb.add_operator("ADD", [a, b], [c])
    mb.add_operator("ADD", [c, c], [d])
    mb.inputs, mb.outputs = [a, b], [d]
    g = read_tflite(mb.finish())
    assert list(g.tensors) == ["t:0", "t:1", "t:2", ":3"]
    assert g.operators[0].inputs == ["t:0", "t:1"] and g.outputs == [":3"]


def test_reads_from_path(tmp_path):
    path = tmp_path / "layer.tflite"
    path.write_bytes(dwsep_layer_model(SPEC))
    assert read_tflite(path).tensor("dw/out").shape == (1, 5, 4, 10)
    assert read_tflite(str(path)).output.shape == (1, 5, 4, 6)


# --------------------------------------------------------------------------------------------
# corrupt and unsupported files


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.tflite"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(ModelFormatError, match=r"noise\.tflite: not a TFLite flatbuffer "
                                               r"\(file identifier .*expected b'TFL3'\)"):
        read_tflite(path)


def test_wrong_identifier():
    model = bytearray(dwsep_layer_model(SPEC))
    model[4:8] = b"ONNX"
    with pytest.raises(ModelFormatError, match=r"<bytes>: not a TFLite flatbuffer \(file "
                                               r"identifier b'ONNX', expected b'TFL3'\)"):
        read_tflite(bytes(model))


@pytest.mark.parametrize("length", [0, 7])
def test_too_short(length):
    with pytest.raises(ModelFormatError, match=f"{length} bytes is too short"):
        read_tflite(dwsep_layer_model(SPEC)[:length])


def test_every_truncation_is_detected():
    model = single_op_model(LayerSpec(3, 3, 2, 1, 3, 1, 1, "SAME", "NONE", 2, "NONE", 5),
                            "DEPTHWISE_CONV_2D")
    for length in range(8, len(model)):
        with pytest.raises(ModelFormatError, match="corrupt or truncated|truncated|needs"):
            read_tflite(model[:length])


def test_flipped_bytes_raise_only_model_errors():
    """Random corruption either still parses or raises one of the two documented errors, never
    an IndexError or struct.error from the flatbuffer accessors."""
    model = dwsep_layer_model(SPEC)
    rng = np.random.default_rng(2)
    for _ in range(300):
        corrupt = bytearray(model)
        for pos in rng.integers(8, len(model), size=3):
            corrupt[pos] = rng.integers(0, 256)
        with contextlib.suppress(ModelFormatError, UnsupportedModelError):
            read_tflite(bytes(corrupt))


def _repack(model: bytes, edit) -> bytes:
    obj = schema.ModelT.InitFromPackedBuf(model, 0)
    edit(obj)
    b = flatbuffers.Builder(1024)
    b.Finish(obj.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_two_subgraphs_rejected():
    model = _repack(dwsep_layer_model(SPEC),
                    lambda m: m.subgraphs.append(copy.deepcopy(m.subgraphs[0])))
    with pytest.raises(UnsupportedModelError, match="model has 2 subgraphs; dwsep supports "
                                                    "exactly 1"):
        read_tflite(model)


def test_batch_not_one_rejected():
    mb = ModelBuilder()
    x = mb.add_tensor("images", (4, 8, 8, 3), "int8", 0.1, 0)
    y = mb.add_tensor("y", (4, 8, 8, 3), "int8", 0.1, 0)
    mb.add_operator("ADD", [x, x], [y])
    mb.inputs, mb.outputs = [x], [y]
    with pytest.raises(UnsupportedModelError, match=r"tensor 'images' has batch size 4 "
                                                    r"\(shape \[4, 8, 8, 3\]\)"):
        read_tflite(mb.finish())


def test_out_of_range_tensor_index_is_format_error():
    model = _repack(dwsep_layer_model(SPEC),
                    lambda m: setattr(m.subgraphs[0].operators[0], "inputs", [0, 1, 99]))
    with pytest.raises(ModelFormatError, match="DEPTHWISE_CONV_2D 0 input refers to tensor 99,"
                                               " model has 7"):
        read_tflite(model)
