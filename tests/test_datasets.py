"""experiments.datasets: the seeds' splits, the IDX reader, and missing data.

Nothing here downloads: every socket connection fails (see `_no_network`),
tfds is only reached through `tfds.testing.mock_data` or empty directories,
and the real Fashion-MNIST test runs only where the Debian package put it.
"""

import gzip
import pathlib
import re
import socket
import struct

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from experiments import datasets

FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
_IDX_CODES = {
    np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E,
}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise OSError("tests/test_datasets.py: network access is forbidden")
  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def fresh_cache():
  # Mocked tfds data must neither be served from nor left in the cache.
  datasets.clear_cache()
  yield
  datasets.clear_cache()


def write_idx(path, array, *, gz=None, type_code=None):
  """An independent IDX writer: header, big-endian dims, big-endian payload."""
  array = np.asarray(array)
  code = _IDX_CODES[array.dtype] if type_code is None else type_code
  header = bytes([0, 0, code, array.ndim]) + struct.pack(
      f">{array.ndim}I", *array.shape)
  payload = array.astype(array.dtype.newbyteorder(">")).tobytes()
  data = header + payload
  path = pathlib.Path(path)
  if gz if gz is not None else path.suffix == ".gz":
    data = gzip.compress(data)
  path.write_bytes(data)
  return path


def write_image_set(directory, n_train=20, n_test=5, *, gz=True, seed=0):
  """A tiny MNIST-like directory; returns the arrays written."""
  rng = np.random.default_rng(seed)
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  suffix = ".gz" if gz else ""
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
      "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
      "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
  }
  for stem, array in arrays.items():
    write_idx(directory / (stem + suffix), array)
  return arrays


def sizes(ds):
  return ds.x_train.shape[0], ds.x_val.shape[0], ds.x_test.shape[0]


def check_types(ds):
  for x in (ds.x_train, ds.x_val, ds.x_test):
    assert x.dtype == np.float32
  for y in (ds.y_train, ds.y_val, ds.y_test):
    assert y.dtype == np.int32 and y.ndim == 1
    assert y.min() >= 0 and y.max() < ds.num_classes
  assert ds.x_train.shape[0] == ds.y_train.shape[0]
  assert ds.x_val.shape[0] == ds.y_val.shape[0]
  assert ds.x_test.shape[0] == ds.y_test.shape[0]


# --------------------------------------------------------------------------
# Tabular sets.

def test_iris_is_the_seeds_split():
  ds = datasets.load("iris")
  # The seed's code, verbatim.
  iris = load_iris()
  x_train, x_test, y_train, y_test = train_test_split(
      iris.data, iris.target, test_size=0.2, random_state=42)
  x_train, x_val, y_train, y_val = train_test_split(
      x_train, y_train, test_size=0.25, random_state=42)
  scaler = StandardScaler()
  x_train = scaler.fit_transform(x_train)
  x_val = scaler.transform(x_val)
  x_test = scaler.transform(x_test)

  check_types(ds)
  assert sizes(ds) == (90, 30, 30)
  assert ds.num_classes == 3
  np.testing.assert_array_equal(ds.x_train, x_train.astype(np.float32))
  np.testing.assert_array_equal(ds.x_val, x_val.astype(np.float32))
  np.testing.assert_array_equal(ds.x_test, x_test.astype(np.float32))
  np.testing.assert_array_equal(ds.y_train, y_train)
  np.testing.assert_array_equal(ds.y_val, y_val)
  np.testing.assert_array_equal(ds.y_test, y_test)
  # The scaler saw the training part only.
  np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-6)
  np.testing.assert_allclose(ds.x_train.std(0), 1.0, atol=1e-5)
  assert np.abs(ds.x_test.mean(0)).max() > 1e-3


def test_tabular_split_ignores_seed_but_follows_random_state():
  a = datasets.load("iris", seed=0)
  b = datasets.load("iris", seed=7)
  c = datasets.load("iris", random_state=0)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert not np.array_equal(a.y_train, c.y_train)


# Class counts of the whole dataset, over the three splits: scikit-learn's digits
# (1,797 images, about 180 per class, as its description says) and breast cancer
# (212 malignant, 357 benign, likewise); palmerpenguins' 344 penguins (152
# Adelie, 68 Chinstrap, 124 Gentoo).
@pytest.mark.parametrize("name, expected_sizes, features, class_counts", [
    ("digits", (1077, 360, 360), 64,
     [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    ("breast_cancer", (341, 114, 114), 30, [212, 357]),
    # Less the 2 penguins with no measurements (one Adelie, one Gentoo).
    ("penguins", (204, 69, 69), 4, [151, 68, 123]),
])
def test_tabular_shapes_and_classes(name, expected_sizes, features, class_counts):
  ds = datasets.load(name)
  check_types(ds)
  assert sizes(ds) == expected_sizes
  assert ds.x_train.shape[1] == ds.x_val.shape[1] == ds.x_test.shape[1] == features
  assert ds.num_classes == len(class_counts)
  labels = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
  np.testing.assert_array_equal(np.bincount(labels), class_counts)
  np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-5)
  assert np.isfinite(ds.x_train).all()


def test_unknown_name_and_option():
  with pytest.raises(ValueError, match="Unknown dataset"):
    datasets.load("cifar10")
  with pytest.raises(TypeError, match="flatten"):
    datasets.load("iris", flatten=False)
  with pytest.raises(ValueError, match="source"):
    datasets.load("penguins", source="csv")


def test_subset_sizes():
  ds = datasets.load("digits", train_size=500, test_size=100)
  assert sizes(ds) == (500, 360, 100)
  full = datasets.load("digits")
  np.testing.assert_array_equal(ds.x_train, full.x_train[:500])
  assert "Subset" in ds.note
  # The whole split is a valid size.
  assert sizes(datasets.load("iris", train_size=90, test_size=30)) == (90, 30, 30)
  for bad in (0, 2000, 1.5, True):
    with pytest.raises(ValueError, match="train_size"):
      datasets.load("iris", train_size=bad)
  for bad in (-1, 1.5, True, "0"):
    with pytest.raises(ValueError, match="seed"):
      datasets.load("iris", seed=bad)
  assert sizes(datasets.load("iris", seed=np.int64(3))) == sizes(datasets.load("iris"))


# --------------------------------------------------------------------------
# The IDX reader.

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype, shape", [
    (np.uint8, (3, 28, 28)), (np.uint8, (7,)), (np.int8, (2, 3)),
    (np.int16, (4, 5)), (np.int32, (2, 2, 2)), (np.float32, (6,)),
    (np.float64, (1, 3)), (np.uint8, (0, 28, 28)),  # a header and no payload
])
def test_read_idx_round_trip(tmp_path, gz, dtype, shape):
  rng = np.random.default_rng(0)
  array = (rng.normal(size=shape) * 100).astype(dtype)
  path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array)
  back = datasets.read_idx(path)
  assert back.dtype == np.dtype(dtype) and back.dtype.isnative
  assert back.flags.writeable
  np.testing.assert_array_equal(back, array)


def test_idx_files_are_read_once_and_shared_read_only(tmp_path):
  path = write_idx(tmp_path / "a.idx", np.arange(6, dtype=np.uint8))
  first = datasets._read_idx_once(path)
  assert datasets._read_idx_once(tmp_path / "." / "a.idx") is first  # one read per file
  assert not first.flags.writeable  # shared by every later load, so nobody may change it
  write_idx(path, np.arange(7, dtype=np.uint8))  # replaced in place: read again
  np.testing.assert_array_equal(datasets._read_idx_once(path), np.arange(7))


def test_read_idx_detects_gzip_by_content(tmp_path):
  array = np.arange(12, dtype=np.uint8).reshape(3, 4)
  path = write_idx(tmp_path / "no_suffix", array, gz=True)
  np.testing.assert_array_equal(datasets.read_idx(path), array)


def _truncated_payload(path):
  write_idx(path, np.zeros((2, 28, 28), np.uint8))
  path.write_bytes(path.read_bytes()[:-1])


def _extra_payload(path):
  write_idx(path, np.zeros((2, 28, 28), np.uint8))
  path.write_bytes(path.read_bytes() + b"\0")


def _bad_magic(path):
  write_idx(path, np.zeros((2, 28, 28), np.uint8))
  data = bytearray(path.read_bytes())
  data[0] = 1
  path.write_bytes(bytes(data))


def _bad_type_code(path):
  write_idx(path, np.zeros((2, 28, 28), np.uint8), type_code=0x07)


def _truncated_header(path):
  path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">I", 2))


def _truncated_gzip(path):
  write_idx(path, np.arange(2000, dtype=np.int32), gz=True)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _bad_gzip(path):
  write_idx(path, np.arange(2000, dtype=np.int32), gz=True)
  data = bytearray(path.read_bytes())
  data[20:40] = b"\xff" * 20
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    _truncated_payload, _extra_payload, _bad_magic, _bad_type_code,
    _truncated_header, _truncated_gzip, _bad_gzip,
])
def test_read_idx_rejects_damaged_files(tmp_path, damage):
  path = tmp_path / f"{damage.__name__}-idx3-ubyte"
  damage(path)
  with pytest.raises(ValueError, match=re.escape(str(path))):
    datasets.read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_small_idx_directory_follows_the_mnist_protocol(tmp_path, gz):
  arrays = write_image_set(tmp_path, n_train=20, n_test=5, gz=gz)
  ds = datasets.load("mnist", data_dir=tmp_path, seed=3)
  check_types(ds)
  assert sizes(ds) == (14, 3, 5)  # int(0.7 * 20), int(0.15 * 20), all of test
  assert ds.x_train.shape == (14, 784)
  images = arrays["train-images-idx3-ubyte"].reshape(20, 784) / np.float32(255)
  labels = arrays["train-labels-idx1-ubyte"]
  permutation = np.random.default_rng(3).permutation(20)
  np.testing.assert_array_equal(ds.x_train, images[permutation[:14]])
  np.testing.assert_array_equal(ds.y_train, labels[permutation[:14]])
  np.testing.assert_array_equal(ds.x_val, images[permutation[14:17]])
  np.testing.assert_array_equal(
      ds.y_test, arrays["t10k-labels-idx1-ubyte"].astype(np.int32))
  assert str(tmp_path) in ds.note
  image_ds = datasets.load("kmnist", data_dir=tmp_path, seed=3, flatten=False)
  assert image_ds.x_train.shape == (14, 28, 28, 1)
  np.testing.assert_array_equal(image_ds.x_train.reshape(14, 784), ds.x_train)


def test_idx_directory_may_be_named_after_the_dataset(tmp_path):
  write_image_set(tmp_path / "kmnist")
  assert sizes(datasets.load("kmnist", data_dir=tmp_path)) == (14, 3, 5)


def test_image_set_validation_names_the_file(tmp_path):
  write_image_set(tmp_path)
  labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
  write_idx(labels, np.zeros(4, np.uint8))  # 4 labels for 5 images
  with pytest.raises(ValueError, match=re.escape(str(labels))):
    datasets.load("mnist", data_dir=tmp_path)
  # One fault at a time: each check must catch it alone. A rewrite of the same
  # size within one file-system clock tick could be served from the IDX cache,
  # so the cache is cleared before each load.
  for bad in (np.full(5, 10, np.uint8),  # every label out of range
              np.array([0, 1, 2, 3, 10], np.uint8),  # the last one only
              np.zeros(5, np.int8),  # labels of another type
              np.zeros((5, 1), np.uint8)):  # labels of another shape
    write_idx(labels, bad)
    datasets.clear_cache()
    with pytest.raises(ValueError, match=re.escape(str(labels))):
      datasets.load("mnist", data_dir=tmp_path)
  write_idx(labels, np.zeros(5, np.uint8))
  images = tmp_path / "train-images-idx3-ubyte.gz"
  for bad in (np.zeros((20, 27, 28), np.uint8), np.zeros((20, 28, 28), np.int8),
              np.zeros((20, 784), np.uint8)):
    write_idx(images, bad)
    datasets.clear_cache()
    with pytest.raises(ValueError, match=re.escape(str(images))):
      datasets.load("mnist", data_dir=tmp_path)


def test_damaged_file_in_data_dir_is_an_error_not_a_fallback(tmp_path):
  write_image_set(tmp_path)
  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(ValueError, match=re.escape(str(path))):
    datasets.load("fashion_mnist", data_dir=tmp_path)


# --------------------------------------------------------------------------
# Missing data.

def test_missing_dataset_says_how_to_get_it(tmp_path, fresh_cache):
  with pytest.raises(datasets.DatasetUnavailable) as info:
    datasets.load("mnist", data_dir=tmp_path)
  message = str(info.value)
  assert str(tmp_path) in message  # the places tried
  assert "tfds build mnist" in message and "data_dir" in message
  assert isinstance(info.value, RuntimeError)


def test_explicit_data_dir_replaces_the_default_location(tmp_path, fresh_cache):
  # Even where /usr/share/datasets/fashion-mnist exists, an explicit data_dir
  # without the data must not silently fall back to it.
  with pytest.raises(datasets.DatasetUnavailable, match="apt-get install"):
    datasets.load("fashion_mnist", data_dir=tmp_path)


def test_a_set_without_a_default_directory_asks_for_data_dir(fresh_cache):
  with pytest.raises(datasets.DatasetUnavailable, match="no default directory for kmnist; pass data_dir"):
    datasets.load("kmnist", source="idx")


def test_partial_idx_directory_and_idx_only_source(tmp_path):
  write_image_set(tmp_path)
  (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
  with pytest.raises(datasets.DatasetUnavailable, match="t10k-images"):
    datasets.load("kmnist", data_dir=tmp_path, source="idx")


def test_penguins_tfds_missing(tmp_path, fresh_cache):
  with pytest.raises(datasets.DatasetUnavailable, match="penguins/processed"):
    datasets.load("penguins", source="tfds", data_dir=tmp_path)


# --------------------------------------------------------------------------
# tfds data sources (mocked: tfds.testing.mock_data, MockPolicy.USE_CODE,
# which also patches tfds.data_source; every split yields the same examples).

@pytest.fixture
def mock_tfds(fresh_cache):
  tfds = pytest.importorskip("tensorflow_datasets")
  def enter(num_examples):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE)
  return enter


def test_tfds_mnist(tmp_path, mock_tfds):
  with mock_tfds(20):
    ds = datasets.load("mnist", source="tfds", data_dir=tmp_path)
    images = datasets.load("mnist", source="tfds", data_dir=tmp_path,
                           flatten=False)
  check_types(ds)
  assert sizes(ds) == (14, 3, 20)
  assert ds.x_train.shape == (14, 784) and images.x_train.shape == (14, 28, 28, 1)
  for x in (ds.x_train, ds.x_val, ds.x_test):
    assert 0.0 <= x.min() and x.max() <= 1.0
  assert ds.x_test.max() > 0.5  # scaled from 0..255, not already in [0, 1]
  assert "tfds" in ds.note


def test_tfds_is_the_auto_fallback(tmp_path, mock_tfds):
  with mock_tfds(10):
    ds = datasets.load("kmnist", data_dir=tmp_path)
  assert sizes(ds) == (7, 1, 10) and "tfds" in ds.note


def test_tfds_penguins(tmp_path, mock_tfds):
  with mock_tfds(40):
    ds = datasets.load("penguins", source="tfds", data_dir=tmp_path)
  check_types(ds)
  assert sizes(ds) == (24, 8, 8)
  assert ds.x_train.shape[1] == 4 and ds.num_classes == 3
  np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-5)


def test_tfds_copy_that_cannot_be_read_is_named(tmp_path, monkeypatch, fresh_cache):
  """Records that fail to read (a damaged array_record copy) give a ValueError
  naming the dataset, the place and the split, which the CLIs report with exit 2."""
  tfds = pytest.importorskip("tensorflow_datasets")

  class Damaged:
    def __len__(self):
      return 3

    def __getitem__(self, i):
      raise OSError("Failed to read chunk: corrupted record")

  monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: Damaged())
  with pytest.raises(ValueError, match=(
      rf"tfds kmnist in {re.escape(str(tmp_path))}: split 'train' cannot be read"
      r" \(OSError: Failed to read chunk: corrupted record\)")):
    datasets.load("kmnist", source="tfds", data_dir=tmp_path)


# --------------------------------------------------------------------------
# The real Fashion-MNIST (Debian package dataset-fashion-mnist).

needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason=f"Fashion-MNIST IDX files not in {FASHION_DIR}"
    " (apt-get install dataset-fashion-mnist)")


@needs_fashion
def test_real_fashion_mnist_files():
  train_images = datasets.read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
  train_labels = datasets.read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
  test_images = datasets.read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
  test_labels = datasets.read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
  assert train_images.shape == (60000, 28, 28) and train_images.dtype == np.uint8
  assert test_images.shape == (10000, 28, 28)
  assert train_images.min() == 0 and train_images.max() == 255
  np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)


@needs_fashion
@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_another_sets_files_are_refused(name, tmp_path):
  """MNIST, KMNIST and Fashion-MNIST files share names and sizes: Fashion-MNIST's given as
  another set's are refused, naming the file, here or in data_dir/<name>."""
  with pytest.raises(ValueError, match=rf"t10k-labels.*fashion_mnist's.*not {name}'s"):
    datasets.load(name, data_dir=FASHION_DIR, source="idx")
  (tmp_path / name).symlink_to(FASHION_DIR, target_is_directory=True)
  with pytest.raises(ValueError, match=rf"fashion_mnist's.*not {name}'s"):
    datasets.load(name, data_dir=tmp_path, source="idx")
  assert datasets.load("fashion_mnist", data_dir=FASHION_DIR, source="idx", train_size=1).name == (
      "fashion_mnist")


def test_the_directory_named_after_the_set_comes_first(tmp_path):
  """data_dir/<name> is searched before data_dir itself, which may hold another set."""
  write_image_set(tmp_path)
  write_image_set(tmp_path / "kmnist", n_train=30)
  assert datasets.load("kmnist", data_dir=tmp_path).x_train.shape[0] == 21


@needs_fashion
def test_real_fashion_mnist_protocol():
  ds = datasets.load("fashion_mnist")
  check_types(ds)
  assert sizes(ds) == (42000, 9000, 10000)
  assert ds.x_train.shape == (42000, 784) and ds.num_classes == 10
  for x in (ds.x_train, ds.x_val, ds.x_test):
    assert x.min() == 0.0 and x.max() == 1.0
  assert str(FASHION_DIR) in ds.note
  # The split is seeded: same seed, same split; another seed, another one.
  again = datasets.load("fashion_mnist", seed=0)
  np.testing.assert_array_equal(again.y_train, ds.y_train)
  other = datasets.load("fashion_mnist", seed=1)
  assert not np.array_equal(other.y_train, ds.y_train)
  np.testing.assert_array_equal(other.y_test, ds.y_test)
  # The seed-004 subset.
  small = datasets.load("fashion_mnist", train_size=500, test_size=100)
  assert sizes(small) == (500, 9000, 100)
