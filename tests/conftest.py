"""Fixtures shared by several test modules (helpers without fixtures: ``helpers.py``)."""

from __future__ import annotations

import pytest
from helpers import calibration_photos

from dwsep.host import imagenet, mobilenet, quantizer
from dwsep.host.checkpoint import load_state_dict
from dwsep.host.driver import Accelerator
from dwsep.hw.config import get_config


@pytest.fixture(scope="module")
def rtl():
    """'tiny' on the Verilated RTL (one simulator per module)."""
    with Accelerator("tiny", "rtl") as acc:
        yield acc


@pytest.fixture(scope="module")
def reference():
    """'tiny' on the reference device."""
    with Accelerator("tiny", "reference") as acc:
        yield acc


@pytest.fixture(scope="module")
def accelerators():
    """``accelerators(config)``: one reference-device Accelerator per config (object or
    name) for the module, closed at its end."""
    accs = {}

    def get(config):
        name = get_config(config).name
        if name not in accs:
            accs[name] = Accelerator(config, "reference")
        return accs[name]

    yield get
    for a in accs.values():
        a.close()


@pytest.fixture(scope="session")
def v2_state_dict():
    """torchvision's ImageNet weights of MobileNetV2-1.0 (read-only: shared by modules)."""
    return load_state_dict(mobilenet.torchvision_weights_path())


@pytest.fixture(scope="session")
def v2_int8(v2_state_dict) -> bytes:
    """MobileNetV2-1.0-224 of ``v2_state_dict``, quantized on the sample photos but
    ``grace_hopper`` (about 5 s, once per worker)."""
    calib = calibration_photos()
    assert len(calib) == 7, "scikit-image's sample photos are missing: install dwsep[models]"
    return quantizer.quantize("mobilenet_v2", v2_state_dict, calib)


@pytest.fixture(scope="session")
def grace_hopper():
    return imagenet.sample_images()["grace_hopper"]
