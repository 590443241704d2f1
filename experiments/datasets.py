"""Every dataset the experiments use, as numpy arrays with the seeds' preprocessing.

One entry point, :func:`load`, returns a :class:`Dataset` (x float32, y int32)
for each name in :data:`NAMES`. Nothing is ever downloaded: a dataset that is
not on this machine raises :class:`DatasetUnavailable`, whose message lists the
places looked at and how to obtain the data. There is no silent stand-in.

Protocols (``/work/shared/SPEC.md``, "Protocols"):

* Tabular sets (``iris``, ``digits``, ``breast_cancer``, ``penguins``) follow the
  seed's Iris code exactly: ``train_test_split(X, y, test_size=0.2,
  random_state=42)``, then ``train_test_split(test_size=0.25, random_state=42)``
  on the rest (60/20/20), and a ``StandardScaler`` fitted on the training part
  only and applied to validation and test. The split is fixed by
  ``random_state`` (default 42, as in the seed), not by ``seed``, so that runs
  with different seeds share one split as the seed's runs did.
* 28×28 sets (``mnist``, ``fashion_mnist``, ``kmnist``) follow the seed's MNIST
  code: the 60k training set is split 70/15/15 with ``int(0.7 n)`` and
  ``int(0.15 n)`` (42000/9000, the last 9000 unused, as the seed's
  ``random_split`` leaves them), the official 10k test set is the test set, and
  pixels are scaled to [0, 1] as ``ToTensor()`` does. The seed's permutation came
  from an unseeded torch generator; here it is ``np.random.default_rng(seed)``.

Example::

  from experiments import datasets
  ds = datasets.load("iris")                 # 90/30/30, standardised
  ds = datasets.load("kmnist", data_dir="~/data/kmnist",
                     train_size=500, test_size=100)   # the seed-004 protocol
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import operator
import pathlib
import struct
import zlib
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = (
    "Dataset",
    "DatasetUnavailable",
    "NAMES",
    "clear_cache",
    "load",
    "read_idx",
)


class DatasetUnavailable(RuntimeError):
  """The requested dataset is not on this machine; the message says how to get it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """One dataset, split and preprocessed.

  Attributes:
    name: the registry name (one of :data:`NAMES`).
    x_train: training inputs, float32, shape ``(n_train, ...)``.
    y_train: training labels, int32 in ``[0, num_classes)``, shape ``(n_train,)``.
    x_val: validation inputs, float32.
    y_val: validation labels, int32.
    x_test: test inputs, float32.
    y_test: test labels, int32.
    num_classes: the number of classes.
    note: where the data came from and how it was split and scaled.
  """

  name: str
  # The arrays are left out of repr and eq: printing or comparing them
  # elementwise is never what a caller of repr/== wants.
  x_train: np.ndarray = dataclasses.field(repr=False)
  y_train: np.ndarray = dataclasses.field(repr=False)
  x_val: np.ndarray = dataclasses.field(repr=False)
  y_val: np.ndarray = dataclasses.field(repr=False)
  x_test: np.ndarray = dataclasses.field(repr=False)
  y_test: np.ndarray = dataclasses.field(repr=False)
  num_classes: int
  note: str


# --------------------------------------------------------------------------
# IDX files (the MNIST family's distribution format).

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path) -> np.ndarray:
  """Reads one IDX file, gzipped or not, strictly.

  The header is two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B
  int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
  then each dimension as a big-endian uint32. The payload must hold exactly
  the product of the dimensions, no more and no less. Compression is detected
  from the gzip magic bytes, not from the file name.

  Args:
    path: the file.

  Returns:
    A new, writable array in native byte order with the file's shape.

  Raises:
    ValueError: the file is truncated or corrupt (bad gzip stream, bad magic,
      unknown type code, payload size not matching the header); the message
      names the file.
    FileNotFoundError: the file does not exist.
  """
  path = pathlib.Path(path)
  raw = path.read_bytes()
  if raw[:2] == _GZIP_MAGIC:
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise ValueError(f"{path}: corrupt or truncated gzip stream ({e}).") from e
  if len(raw) < 4:
    raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes).")
  zero0, zero1, type_code, ndim = raw[:4]
  if zero0 != 0 or zero1 != 0:
    raise ValueError(
        f"{path}: not an IDX file (magic {raw[:4].hex()}; the first two bytes"
        " must be zero)."
    )
  if type_code not in _IDX_DTYPES:
    raise ValueError(
        f"{path}: unknown IDX type code 0x{type_code:02X} (expected one of "
        + ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES) + ")."
    )
  if ndim == 0:
    raise ValueError(f"{path}: IDX header declares zero dimensions.")
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise ValueError(
        f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions"
        f" need {header_size})."
    )
  shape = struct.unpack(f">{ndim}I", raw[4:header_size])
  dtype = _IDX_DTYPES[type_code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  actual = len(raw) - header_size
  if actual != expected:
    raise ValueError(
        f"{path}: IDX payload is {actual} bytes but the header {shape} of"
        f" {dtype.name} needs {expected} (truncated or corrupt file)."
    )
  array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
  return array.astype(dtype.newbyteorder("="), copy=True)


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
  # mtime and size are part of the key so that a file replaced in place is
  # read again rather than served stale.
  del mtime_ns, size
  array = read_idx(path)
  array.flags.writeable = False  # Shared by every later call.
  return array


def _read_idx_once(path: pathlib.Path) -> np.ndarray:
  path = path.resolve()  # one key per file, whatever the working directory
  stat = path.stat()
  return _read_idx_cached(str(path), stat.st_mtime_ns, stat.st_size)


# --------------------------------------------------------------------------
# 28×28 image sets.

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class _ImageSet:
  tfds_name: str
  default_idx_dirs: tuple[str, ...]
  how_to_get: str


# The first ten test labels of the sets whose files are alike in name, shape and
# size: MNIST's, KMNIST's and Fashion-MNIST's IDX files can only be told apart
# by their contents. (KMNIST's are not listed: no copy of it was at hand.)
_TEST_LABELS_START = {
    "mnist": (7, 2, 1, 0, 4, 1, 4, 9, 5, 9),
    "fashion_mnist": (9, 2, 1, 1, 6, 1, 4, 6, 5, 7),
}


def _check_image_set(name: str, test_labels: np.ndarray, path: pathlib.Path) -> None:
  """Refuses IDX files that are another known set's (e.g. Fashion-MNIST's given as KMNIST)."""
  start = tuple(int(v) for v in test_labels[:10])
  for other, known in _TEST_LABELS_START.items():
    if other != name and start == known:
      raise ValueError(
          f"{path}: these IDX files are {other}'s (their first test labels are {list(known)}),"
          f" not {name}'s; point data_dir at {name}'s files."
      )


_IMAGE_SETS = {
    "mnist": _ImageSet(
        tfds_name="mnist",
        default_idx_dirs=(),
        how_to_get=(
            "the four IDX files from http://yann.lecun.com/exdb/mnist/ (or a"
            " mirror)"
        ),
    ),
    "fashion_mnist": _ImageSet(
        tfds_name="fashion_mnist",
        # Debian/Ubuntu package `dataset-fashion-mnist`.
        default_idx_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_get=(
            "`apt-get install dataset-fashion-mnist` (installs the IDX files"
            " in /usr/share/datasets/fashion-mnist/), or the four IDX files"
            " from https://github.com/zalandoresearch/fashion-mnist"
        ),
    ),
    "kmnist": _ImageSet(
        tfds_name="kmnist",
        default_idx_dirs=(),
        how_to_get=(
            "the four IDX files (train-images-idx3-ubyte.gz etc., the"
            " 'Kuzushiji-MNIST' MNIST-format download) from"
            " https://github.com/rois-codh/kmnist"
        ),
    ),
}


def _find_idx_files(directory: pathlib.Path) -> tuple[Optional[dict], str]:
  """Returns ({role: path}, "") if all four files are there, else (None, why)."""
  if not directory.is_dir():
    return None, f"{directory}: no such directory"
  found, missing = {}, []
  for role, stem in _IDX_FILES.items():
    for candidate in (directory / (stem + ".gz"), directory / stem):
      if candidate.is_file():
        found[role] = candidate
        break
    else:
      missing.append(stem + "[.gz]")
  if missing:
    return None, f"{directory}: missing {', '.join(missing)}"
  return found, ""


def _checked_image_pair(images_path, labels_path, num_classes: int = 10):
  """Reads an images/labels IDX pair and checks they describe one 28×28 set."""
  images = _read_idx_once(images_path)
  labels = _read_idx_once(labels_path)
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
    raise ValueError(
        f"{images_path}: expected uint8 images of shape (n, 28, 28), got"
        f" {images.dtype} {images.shape}."
    )
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise ValueError(
        f"{labels_path}: expected uint8 labels of shape (n,), got"
        f" {labels.dtype} {labels.shape}."
    )
  if labels.shape[0] != images.shape[0]:
    raise ValueError(
        f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images"
        f" in {images_path}."
    )
  if labels.size and labels.max() >= num_classes:
    raise ValueError(
        f"{labels_path}: label {int(labels.max())} outside [0, {num_classes})."
    )
  return images, labels


def _read_tfds_split(source: Sequence, image_key: str, label_key: str):
  # Item by item: tfds' own mock data source (tfds.testing.mock_data) has no
  # working batched __getitems__, and this runs once per process anyway.
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(ex[image_key]) for ex in examples])
  labels = np.asarray([ex[label_key] for ex in examples])
  return images, labels


@functools.lru_cache(maxsize=8)
def _load_tfds(tfds_name: str, splits: tuple[str, ...], data_dir: Optional[str],
               keys: tuple[str, str]):
  """Reads whole tfds splits through `tfds.data_source`, never downloading.

  Returns ({split: (inputs, labels)}, where) or raises _NotThere.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _NotThere(f"tfds {tfds_name}: tensorflow-datasets not installed") from e
  try:
    sources = {
        split: tfds.data_source(
            tfds_name, split=split, data_dir=data_dir,
            # Never fetch: a missing dataset must be reported, not downloaded.
            download=False, try_gcs=False,
        )
        for split in splits
    }
  except Exception as e:  # pylint: disable=broad-except
    # tfds reports a dataset that is not prepared with assorted exception
    # types (and, for TFRecord-only data, a misleading message), so every
    # failure becomes one entry in the caller's list of places tried.
    raise _NotThere(
        f"tfds {tfds_name} in {data_dir or _tfds_default_data_dir(tfds)}: no array_record"
        f" copy prepared there (tfds said {_said(e)})"
    ) from e
  arrays = {}
  for split, source in sources.items():
    try:
      inputs, labels = _read_tfds_split(source, *keys)
    except (OSError, ValueError, RuntimeError, KeyError, IndexError) as e:
      # A prepared copy whose records cannot be read (damaged or truncated
      # files): an error naming it, as for damaged IDX files, not a traceback.
      raise ValueError(
          f"tfds {tfds_name} in {data_dir or _tfds_default_data_dir(tfds)}: split {split!r}"
          f" cannot be read ({_said(e)}); its files may be damaged"
      ) from e
    inputs.flags.writeable = False  # Shared by every later call.
    labels.flags.writeable = False
    arrays[split] = (inputs, labels)
  return arrays, f"tfds.data_source({tfds_name!r}, data_dir={data_dir!r})"


def _said(e: Exception) -> str:
  """An exception's type and the first line of its message."""
  return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _tfds_default_data_dir(tfds) -> str:
  try:
    return str(tfds.core.constants.DATA_DIR)
  except AttributeError:
    return "the default tfds data_dir"


class _NotThere(Exception):
  """One source does not hold the dataset; the message says which and why."""


def _unavailable(name: str, tried: list[str], how_to_get: str) -> DatasetUnavailable:
  tfds_name = _IMAGE_SETS[name].tfds_name if name in _IMAGE_SETS else name
  return DatasetUnavailable(
      f"Dataset {name!r} is not available on this machine and is never"
      " downloaded here.\nTried:\n  " + "\n  ".join(tried) + "\nTo get it:\n"
      f"  * {how_to_get}, then pass their directory as data_dir=...;\n"
      f"  * or, on a machine with internet: `tfds build {tfds_name}"
      " --file_format=array_record --data_dir=DIR` (or"
      f" tfds.data_source({tfds_name!r}, data_dir=DIR)), copy DIR here and pass"
      " data_dir=DIR."
  )


def _mnist_protocol_indices(n: int, seed: int):
  """The seed's random_split of n examples: int(0.7n) train, int(0.15n) val."""
  train_size = int(0.7 * n)
  val_size = int(0.15 * n)
  permutation = np.random.default_rng(seed).permutation(n)
  return permutation[:train_size], permutation[train_size:train_size + val_size]


def _scale_images(images: np.ndarray, flatten: bool) -> np.ndarray:
  x = images.astype(np.float32) / np.float32(255.0)
  n = x.shape[0]
  return x.reshape(n, 28 * 28) if flatten else x.reshape(n, 28, 28, 1)


def _load_image_set(name: str, *, data_dir=None, seed: int = 0,
                    source: str = "auto", flatten: bool = True) -> Dataset:
  """A 28×28 set under the seed's MNIST protocol.

  Args:
    name: ``mnist``, ``fashion_mnist`` or ``kmnist``.
    data_dir: a directory with the four IDX files (or ``data_dir/name``), or a
      tfds data_dir where the dataset is prepared as array_record. When given,
      it replaces the default locations.
    seed: seeds the permutation of the 60k training set.
    source: ``"auto"`` (IDX, then tfds), ``"idx"`` or ``"tfds"``.
    flatten: ``(n, 784)`` if True, else ``(n, 28, 28, 1)``.
  """
  if source not in ("auto", "idx", "tfds"):
    raise ValueError(f"source must be 'auto', 'idx' or 'tfds', got {source!r}.")
  spec = _IMAGE_SETS[name]
  tried = []
  raw = None
  if source in ("auto", "idx"):
    if data_dir is not None:
      root = pathlib.Path(data_dir).expanduser()
      directories = (root / name, root)
    else:
      directories = tuple(pathlib.Path(d) for d in spec.default_idx_dirs)
    if not directories:
      tried.append(f"IDX files: no default directory for {name}; pass data_dir")
    for directory in directories:
      files, why = _find_idx_files(directory)
      if files is None:
        tried.append(f"IDX {why}")
        continue
      # A present but damaged file raises here on purpose: falling back to
      # another copy would hide the damage.
      raw = (
          _checked_image_pair(files["train_images"], files["train_labels"]),
          _checked_image_pair(files["test_images"], files["test_labels"]),
      )
      _check_image_set(name, raw[1][1], files["test_labels"])
      where = f"IDX files in {directory}"
      break
  if raw is None and source in ("auto", "tfds"):
    tfds_dir = None if data_dir is None else str(pathlib.Path(data_dir).expanduser())
    try:
      arrays, where = _load_tfds(spec.tfds_name, ("train", "test"), tfds_dir,
                                 ("image", "label"))
      raw = tuple(
          (images.reshape(images.shape[0], 28, 28).astype(np.uint8), labels)
          for images, labels in (arrays["train"], arrays["test"])
      )
    except _NotThere as e:
      tried.append(str(e))
  if raw is None:
    raise _unavailable(name, tried, spec.how_to_get)

  (train_images, train_labels), (test_images, test_labels) = raw
  train_idx, val_idx = _mnist_protocol_indices(train_images.shape[0], seed)
  return Dataset(
      name=name,
      x_train=_scale_images(train_images[train_idx], flatten),
      y_train=train_labels[train_idx].astype(np.int32),
      x_val=_scale_images(train_images[val_idx], flatten),
      y_val=train_labels[val_idx].astype(np.int32),
      x_test=_scale_images(test_images, flatten),
      y_test=np.asarray(test_labels, np.int32),
      num_classes=10,
      note=(
          f"{where}; training set split 70/15/15 by int(0.7n)/int(0.15n) with"
          f" np.random.default_rng({seed}).permutation (last 15% unused), the"
          " official test set, pixels / 255."
      ),
  )


# --------------------------------------------------------------------------
# Tabular sets.

_PENGUIN_FEATURES = (
    "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
)
# tfds' penguins ClassLabel order; palmerpenguins labels are mapped to it.
_PENGUIN_SPECIES = ("Adelie", "Chinstrap", "Gentoo")


def _seed_split_and_scale(name: str, x, y, num_classes: int, where: str,
                          random_state: int) -> Dataset:
  """The seed's Iris protocol: 0.2 test, then 0.25 of the rest as validation."""
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top

  x_train, x_test, y_train, y_test = train_test_split(
      x, y, test_size=0.2, random_state=random_state)
  x_train, x_val, y_train, y_val = train_test_split(
      x_train, y_train, test_size=0.25, random_state=random_state)
  # Fitted on the training part only, as in the seed, so validation and test
  # statistics never leak into the inputs.
  scaler = StandardScaler().fit(x_train)
  return Dataset(
      name=name,
      x_train=scaler.transform(x_train).astype(np.float32),
      y_train=np.asarray(y_train, np.int32),
      x_val=scaler.transform(x_val).astype(np.float32),
      y_val=np.asarray(y_val, np.int32),
      x_test=scaler.transform(x_test).astype(np.float32),
      y_test=np.asarray(y_test, np.int32),
      num_classes=num_classes,
      note=(
          f"{where}; train_test_split(test_size=0.2, random_state={random_state})"
          f" then train_test_split(test_size=0.25, random_state={random_state}),"
          " StandardScaler fitted on train."
      ),
  )


def _load_sklearn(name: str, loader_name: str, *, data_dir=None, seed: int = 0,
                  random_state: int = 42) -> Dataset:
  """A scikit-learn bundled set (no download) under the seed's Iris protocol.

  ``seed`` does not move the split: the seed fixed ``random_state=42``.
  Digits pixels (0..16) are standardised like every tabular set rather than
  divided by 16, so that all tabular sets share one preprocessing.
  """
  del data_dir, seed  # Bundled with scikit-learn; the split is random_state's.
  import sklearn.datasets  # pylint: disable=g-import-not-at-top

  bunch = getattr(sklearn.datasets, loader_name)()
  return _seed_split_and_scale(
      name, bunch.data, bunch.target, len(bunch.target_names),
      f"sklearn.datasets.{loader_name}()", random_state)


def _load_penguins(name: str, *, data_dir=None, seed: int = 0,
                   source: str = "palmerpenguins",
                   random_state: int = 42) -> Dataset:
  """Palmer penguins, 4 numeric features, 3 species, the seed's Iris protocol.

  Args:
    source: ``"palmerpenguins"`` (the package's bundled CSV; rows with a
      missing value in the features used or the species are dropped: 342 of
      344) or ``"tfds"`` (``penguins/processed`` prepared as array_record in
      ``data_dir``, the dataset seed 004 names).
  """
  del seed  # The split is random_state's, as in the seed.
  if source == "palmerpenguins":
    try:
      import palmerpenguins  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise DatasetUnavailable(
          "Dataset 'penguins' needs the palmerpenguins package (it bundles the"
          " data): `pip install palmerpenguins`, or use source='tfds' with a"
          " data_dir where penguins/processed is prepared."
      ) from e
    frame = palmerpenguins.load_penguins()
    frame = frame.dropna(subset=[*_PENGUIN_FEATURES, "species"])
    x = frame[list(_PENGUIN_FEATURES)].to_numpy(np.float64)
    lookup = {species: i for i, species in enumerate(_PENGUIN_SPECIES)}
    y = frame["species"].map(lookup).to_numpy()
    where = "palmerpenguins.load_penguins() (rows with NaN dropped)"
  elif source == "tfds":
    tfds_dir = None if data_dir is None else str(pathlib.Path(data_dir).expanduser())
    try:
      arrays, where = _load_tfds("penguins/processed", ("train",), tfds_dir,
                                 ("features", "species"))
    except _NotThere as e:
      raise DatasetUnavailable(
          "Dataset 'penguins' (source='tfds') is not available on this machine"
          f" and is never downloaded here.\nTried:\n  {e}\nTo get it: on a"
          " machine with internet, `tfds build penguins/processed"
          " --file_format=array_record --data_dir=DIR`, copy DIR here and pass"
          " data_dir=DIR; or use the default source='palmerpenguins'."
      ) from e
    x, y = arrays["train"]
    x = np.asarray(x, np.float64)
  else:
    raise ValueError(
        f"source must be 'palmerpenguins' or 'tfds', got {source!r}.")
  return _seed_split_and_scale(name, x, y, len(_PENGUIN_SPECIES), where,
                               random_state)


# --------------------------------------------------------------------------
# Registry.

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "iris": functools.partial(_load_sklearn, loader_name="load_iris"),
    "digits": functools.partial(_load_sklearn, loader_name="load_digits"),
    "breast_cancer": functools.partial(
        _load_sklearn, loader_name="load_breast_cancer"),
    "penguins": _load_penguins,
    "mnist": _load_image_set,
    "fashion_mnist": _load_image_set,
    "kmnist": _load_image_set,
}

NAMES: tuple[str, ...] = tuple(_LOADERS)


def _take(name: str, split: str, size: Optional[int], *arrays):
  if size is None:
    return arrays
  available = arrays[0].shape[0]
  try:
    count = None if isinstance(size, bool) else operator.index(size)
  except TypeError:
    count = None
  if count is None or not 0 < count <= available:
    raise ValueError(
        f"{name}: {split}_size must be an int in [1, {available}], got {size!r}.")
  return tuple(a[:count] for a in arrays)


def load(name: str, *, data_dir=None, seed: int = 0,
         train_size: Optional[int] = None, val_size: Optional[int] = None,
         test_size: Optional[int] = None, **kwargs) -> Dataset:
  """Loads one dataset of :data:`NAMES`, split and preprocessed as the seeds do.

  Args:
    name: one of :data:`NAMES`.
    data_dir: where the data lies (IDX files or a tfds data_dir); ignored by
      the scikit-learn sets and by palmerpenguins.
    seed: seeds the 70/15/15 permutation of the 28×28 sets; the tabular
      splits are fixed by ``random_state`` (default 42) as in the seed.
    train_size, val_size, test_size: keep only the first this many examples
      of a part (e.g. ``train_size=500, test_size=100`` for seed 004's KMNIST).
      The training and validation parts are already in random order; the
      28×28 test set is in its official order.
    **kwargs: per-dataset options: ``random_state`` (tabular sets);
      ``source`` (``"palmerpenguins"``/``"tfds"`` for penguins,
      ``"auto"``/``"idx"``/``"tfds"`` for 28×28 sets); ``flatten`` (28×28 sets,
      default True).

  Returns:
    A :class:`Dataset`.

  Raises:
    DatasetUnavailable: the data is not on this machine.
    ValueError: an unknown name, a bad size, or a damaged data file.
    TypeError: an option the dataset does not take.
  """
  if name not in _LOADERS:
    raise ValueError(f"Unknown dataset {name!r}; known: {', '.join(NAMES)}.")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
  dataset = _LOADERS[name](name, data_dir=data_dir, seed=seed, **kwargs)
  x_train, y_train = _take(name, "train", train_size, dataset.x_train,
                           dataset.y_train)
  x_val, y_val = _take(name, "val", val_size, dataset.x_val, dataset.y_val)
  x_test, y_test = _take(name, "test", test_size, dataset.x_test,
                         dataset.y_test)
  if (train_size, val_size, test_size) == (None, None, None):
    return dataset
  return dataclasses.replace(
      dataset, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
      x_test=x_test, y_test=y_test,
      note=dataset.note + (
          f" Subset: first {x_train.shape[0]}/{x_val.shape[0]}/"
          f"{x_test.shape[0]} of train/val/test."),
  )


def clear_cache() -> None:
  """Forgets the decoded IDX files and tfds splits kept in this process."""
  _read_idx_cached.cache_clear()
  _load_tfds.cache_clear()
