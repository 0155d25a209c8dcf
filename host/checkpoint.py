"""Read PyTorch checkpoints (``.pth``) into NumPy arrays, without torch.

Two on-disk formats, as ``torch.save`` writes them (``torch/serialization.py``):

- **zip** (torch >= 1.6): a zip archive ``<root>/data.pkl`` (the pickled object) plus one
  file ``<root>/data/<key>`` of raw little-endian bytes per storage. A storage is pickled as
  the persistent id ``("storage", <StorageType>, key, location, numel)``.
- **legacy** (torch < 1.6): consecutive pickles in one file: the magic number
  ``0x1950a86a20f9469cfc6c``, the protocol version 1001, a system-info dict, the object
  (persistent ids ``("storage", <StorageType>, root_key, location, numel, view)``), the list
  of storage keys in file order; then, for each key in that order, an 8-byte little-endian
  element count and the storage's raw bytes.

In both, a tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, backward_hooks)``. Every pickle is read by a restricted unpickler that
resolves only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the typed
storage classes (``torch.FloatStorage``, ...); any other global is refused with
``CheckpointError``, so loading a file never runs code from it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass

import numpy as np

__all__ = ["CheckpointError", "load_state_dict", "LEGACY_MAGIC", "LEGACY_PROTOCOL"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: NumPy dtype of each typed storage class (little-endian, as torch writes on x86 and ARM).
STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(ValueError):
    """The file is not a PyTorch state dict this reader can load safely."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by the pickle; its bytes are found after unpickling.

    ``offset``/``numel`` select a view (legacy format) of the root storage ``key``, in
    elements."""
    key: str
    dtype: np.dtype
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"tensor storage is a {type(storage).__name__}, not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs; storages through ``persistent_load``."""

    def __init__(self, file, label: str, zip_format: bool | None = None):
        super().__init__(file)
        self._label = label
        self._zip_format = zip_format

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(np.dtype(STORAGE_DTYPES[name]))
        raise CheckpointError(
            f"{self._label}: refusing to load global {module}.{name}: only state dicts of "
            f"tensors ({', '.join(sorted(STORAGE_DTYPES))}) can be read without torch")

    def persistent_load(self, pid):
        if self._zip_format is None:
            raise CheckpointError(f"{self._label}: unexpected persistent id {pid!r}")
        expected = 5 if self._zip_format else 6
        if not (isinstance(pid, tuple) and len(pid) == expected and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self._label}: unsupported storage reference {pid!r}")
        dtype, key, numel = pid[1].dtype, str(pid[2]), int(pid[4])
        view = None if self._zip_format else pid[5]
        if view is None:
            return _StorageRef(key, dtype, 0, numel)
        _view_key, offset, view_numel = view
        return _StorageRef(key, dtype, int(offset), int(view_numel))


def _unpickle(file, label: str, zip_format: bool | None = None):
    try:
        return _RestrictedUnpickler(file, label, zip_format).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError) as e:
        raise CheckpointError(f"{label}: corrupt pickle: {e}") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``torch.save``'d state dict (zip or legacy format) as ``{name: ndarray}``.

    Arrays keep their torch dtypes (``float32`` weights, ``int64`` counters) and shapes
    (``[O, I, kh, kw]`` convolution weights). Raises ``CheckpointError`` for anything else:
    another pickled object, a global outside the allowed set, a truncated file.
    """
    label = os.fspath(path)
    if zipfile.is_zipfile(label):
        obj, storages = _read_zip(label)
    else:
        with open(label, "rb") as f:
            obj, storages = _read_legacy(f, label)
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()):
        raise CheckpointError(f"{label}: not a state dict (a mapping of names to tensors)")
    return {name: _materialize(t, storages, label, name) for name, t in obj.items()}


def _read_zip(label: str):
    with zipfile.ZipFile(label) as z:
        pickles = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{label}: zip checkpoint without one <root>/data.pkl")
        root = pickles[0][:-len("data.pkl")]
        byteorder = f"{root}byteorder"
        if byteorder in z.namelist() and z.read(byteorder) != b"little":
            raise CheckpointError(f"{label}: big-endian checkpoints are not supported")
        obj = _unpickle(io.BytesIO(z.read(pickles[0])), label, zip_format=True)
        storages = {}
        for name in z.namelist():
            if name.startswith(f"{root}data/"):
                storages[name[len(f"{root}data/"):]] = z.read(name)
    return obj, storages


def _read_legacy(f, label: str):
    magic = _unpickle(f, label)
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{label}: not a PyTorch checkpoint (no zip archive, and the "
                              f"legacy magic number is {magic!r})")
    protocol = _unpickle(f, label)
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{label}: legacy protocol version {protocol!r}, expected "
                              f"{LEGACY_PROTOCOL}")
    sys_info = _unpickle(f, label)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise CheckpointError(f"{label}: big-endian checkpoints are not supported")
    obj = _unpickle(f, label, zip_format=False)
    # The payload is sized by element count: each key's dtype comes from the tensors using it.
    dtypes = {v.storage.key: v.storage.dtype for v in obj.values()
              if isinstance(v, _TensorRef)} if isinstance(obj, dict) else {}
    keys = _unpickle(f, label)
    storages = {}
    for key in keys:
        count_bytes = f.read(8)
        if len(count_bytes) != 8:
            raise CheckpointError(f"{label}: truncated before storage {key!r}")
        count = int.from_bytes(count_bytes, "little", signed=True)
        if key not in dtypes:
            raise CheckpointError(f"{label}: storage {key!r} is not used by any tensor")
        nbytes = count * dtypes[key].itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{label}: storage {key!r} truncated: {len(data)} of "
                                  f"{nbytes} bytes")
        storages[key] = data
    return obj, storages


def _materialize(t: _TensorRef, storages: dict, label: str, name: str) -> np.ndarray:
    """``out[i] = storage[offset + sum_d i_d * stride_d]``, copied into a new array."""
    ref = t.storage
    if ref.key not in storages:
        raise CheckpointError(f"{label}: tensor {name!r} uses missing storage {ref.key!r}")
    raw = storages[ref.key]
    if len(raw) % ref.dtype.itemsize:
        raise CheckpointError(f"{label}: storage {ref.key!r} has {len(raw)} bytes, not a "
                              f"multiple of {ref.dtype.itemsize}")
    flat = np.frombuffer(raw, ref.dtype)[ref.offset:ref.offset + ref.numel]
    if any(s < 0 for s in t.size) or any(s < 0 for s in t.stride) or len(t.size) != len(
            t.stride):
        raise CheckpointError(f"{label}: tensor {name!r} has size {t.size} stride {t.stride}")
    if 0 in t.size:
        return np.zeros(t.size, ref.dtype.newbyteorder("="))
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
    if t.offset < 0 or last >= flat.size:
        raise CheckpointError(f"{label}: tensor {name!r} (offset {t.offset}, size {t.size}, "
                              f"stride {t.stride}) exceeds its storage of {flat.size} elements")
    view = np.lib.stride_tricks.as_strided(
        flat[t.offset:], t.size, [s * ref.dtype.itemsize for s in t.stride], writeable=False)
    return view.astype(ref.dtype.newbyteorder("="), copy=True)
