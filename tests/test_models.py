"""The experiments' models: sizes, torch's default init, and forward passes equal to the seeds'.

Seed 002's ten Fashion-MNIST networks are rewritten below in PyTorch from the
seed's own classes (``model_mlp1`` … ``model_cnn5`` and their ``*_sigmoid``
twins, which differ only in the activation), loaded with our parameters, and
must give our logits. Seed 003's NumPy CNN is checked against its NumPy forward
pass, and the paper's MLPs and the logistic regression against NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import models

# torch is a test requirement (pip install -e ".[test]"): a missing torch must
# fail this file, not skip it quietly.
try:
  import torch
except ImportError as missing:
  pytest.fail(f"tests/test_models.py needs torch ({missing}); install it with:"
              ' pip install -e ".[test]"', pytrace=False)

# Parameter counts worked out by hand from the seeds' layer lists.
SEED_MODELS = {
    "mlp1": 784 * 64 + 64 + 64 * 10 + 10,
    "mlp2": 784 * 16 + 16 + 16 * 64 + 64 + 64 * 10 + 10,
    "cnn3": (9 * 16 + 16) + (16 * 49 * 8 + 8) + (8 * 25 * 16 + 16) + (144 * 10 + 10),
    "cnn4": (9 * 16 + 16) + (16 * 25 * 8 + 8) + (8 * 9 * 8 + 8) + (8 * 25 * 16 + 16) + (144 * 10 + 10),
    "cnn5": (9 * 16 + 16) + (16 * 9 * 8 + 8) + 2 * (8 * 9 * 8 + 8) + (8 * 9 * 16 + 16)
            + (16 * 9 * 16 + 16) + (144 * 10 + 10),
}


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed002_models_shapes_and_init(name):
  spec = models.seed002(name)
  params = spec.init(jax.random.key(0))
  assert models.num_params(params) == SEED_MODELS[name]
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  out = spec.apply(params, x)
  assert out.shape == (3, 10)
  # Flattened inputs are reshaped inside.
  np.testing.assert_allclose(spec.apply(params, x.reshape(3, 784)), out, rtol=1e-5, atol=1e-6)
  # torch's default init: every parameter of a layer (kernel and bias) drawn
  # from U(±1/sqrt(fan_in)), fan_in = the product of the kernel's input
  # dimensions (in for a dense layer, kh·kw·in for a convolution).
  leaves = jax.tree_util.tree_leaves_with_path(params)
  layers = {}
  for path, leaf in leaves:
    layers.setdefault(path[:-1], {})[path[-1].key] = leaf
  assert layers and all(set(layer) == {"kernel", "bias"} for layer in layers.values())
  for where, layer in layers.items():
    bound = 1.0 / np.sqrt(np.prod(layer["kernel"].shape[:-1]))
    for kind, leaf in layer.items():
      largest = float(jnp.max(jnp.abs(leaf)))
      assert largest <= bound * (1 + 1e-6), (jax.tree_util.keystr(where), kind, largest, bound)
    # The kernel's thousands of draws come close to the bound.
    assert float(jnp.max(jnp.abs(layer["kernel"]))) > 0.9 * bound, jax.tree_util.keystr(where)


def _seed003_numpy_forward(images_nhwc, theta):
  """Seed 003's own NumPy forward pass (Conv2d / MaxPool_2by2 / Flatten / Linear), condensed."""
  def conv(x, w, b):
    oc, ic, kh, kw = w.shape
    n, c, h, wd = x.shape
    shape = (n, ic, h - kh + 1, wd - kw + 1, kh, kw)
    data = np.lib.stride_tricks.as_strided(x, shape=shape, strides=x.strides + x.strides[2:])
    return np.tensordot(data, w, ((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2) + b.reshape(1, oc, 1, 1)

  def pool(x):
    n, c, h, w = x.shape
    return np.nanmax(x.reshape(n, c, h // 2, 2, w // 2, 2), axis=(3, 5))

  c1_w, c1_b, c2_w, c2_b, f_w, f_b = theta
  x = np.ascontiguousarray(images_nhwc.astype(float).transpose(0, 3, 1, 2))
  y = pool(np.maximum(conv(x, c1_w, c1_b), 0))
  g = pool(np.maximum(conv(np.ascontiguousarray(y), c2_w, c2_b), 0))
  return g.reshape(g.shape[0], -1) @ f_w.T + f_b


def test_seed003_cnn_matches_the_seed_numpy_forward():
  spec = models.seed003_cnn()
  p = jax.tree.map(np.asarray, spec.init(jax.random.key(0)))
  assert models.num_params(p) == (8 * 25 + 8) + (8 * 8 * 25 + 8) + (128 * 10 + 10)
  # Our HWIO kernels → the seed's OIHW; our (in, out) dense kernel → its (out, in).
  theta = (p["c1"]["kernel"].transpose(3, 2, 0, 1), p["c1"]["bias"],
           p["c2"]["kernel"].transpose(3, 2, 0, 1), p["c2"]["bias"],
           p["f"]["kernel"].T, p["f"]["bias"])
  x = np.asarray(jax.random.uniform(jax.random.key(2), (4, 28, 28, 1)))
  np.testing.assert_allclose(spec.apply(p, jnp.asarray(x)), _seed003_numpy_forward(x, theta),
                             rtol=1e-4, atol=1e-5)
  assert spec.apply(p, jnp.asarray(x.reshape(4, 784))).shape == (4, 10)


def test_seed003_cnn_uniform_bound():
  spec = models.seed003_cnn(0.01)
  assert spec.name == "seed003-cnn-u0.01" and models.seed003_cnn().name == "seed003-cnn"
  p = spec.init(jax.random.key(0))
  assert max(float(jnp.max(jnp.abs(l))) for l in jax.tree.leaves(p)) <= 0.01
  # Every kernel spreads over the whole interval U(-0.01, 0.01).
  for layer in ("c1", "c2", "f"):
    kernel = p[layer]["kernel"]
    assert float(jnp.min(kernel)) < -0.009 and float(jnp.max(kernel)) > 0.009, layer


def test_seed003_cnn_default_init_is_torchs():
  # torch's default: U(±1/sqrt(fan_in)), fan_in = 1·5·5, 8·5·5 and 128.
  p = models.seed003_cnn().init(jax.random.key(0))
  for layer, fan_in in (("c1", 25), ("c2", 200), ("f", 128)):
    bound = 1 / np.sqrt(fan_in)
    for kind, leaf in p[layer].items():
      assert float(jnp.max(jnp.abs(leaf))) <= bound * (1 + 1e-6), (layer, kind)
    assert float(jnp.max(jnp.abs(p[layer]["kernel"]))) > 0.9 * bound, layer


# --------------------------------------------------------------------------
# Seed 002's classes, as the seed writes them. Its CNNs end with
# `.view(50, 144)` (its batch size); `.view(-1, 144)` is the same flattening
# (NCHW order) for any batch.

def _conv(i, o, k):
  return torch.nn.Conv2d(in_channels=i, out_channels=o, kernel_size=k, stride=1, padding="valid")


class TorchMLP1(torch.nn.Module):  # model_mlp1 / model_mlp1_sigmoid
  def __init__(self, act):
    super().__init__()
    self.fc1 = torch.nn.Linear(784, 64)
    self.act = act
    self.fc10 = torch.nn.Linear(64, 10)

  def forward(self, x):
    x = x.view(-1, 784)
    return self.fc10(self.act(self.fc1(x)))


class TorchMLP2(torch.nn.Module):  # model_mlp2 / model_mlp2_sigmoid
  def __init__(self, act):
    super().__init__()
    self.fc1 = torch.nn.Linear(784, 16)
    self.act = act
    self.fc2 = torch.nn.Linear(16, 64)
    self.fc10 = torch.nn.Linear(64, 10)

  def forward(self, x):
    x = x.view(-1, 784)
    hidden = self.fc1(x)
    hidden2 = self.fc2(self.act(hidden))
    return self.fc10(hidden2)


class TorchCNN3(torch.nn.Module):  # model_cnn3 / model_cnn3_sigmoid
  def __init__(self, act):
    super().__init__()
    self.fc1, self.fc2, self.fc3 = _conv(1, 16, 3), _conv(16, 8, 7), _conv(8, 16, 5)
    self.act = act
    self.mp2 = torch.nn.MaxPool2d(kernel_size=2, stride=2)
    self.fc10 = torch.nn.Linear(144, 10)

  def forward(self, x):
    relu2_output = self.act(self.fc2(self.act(self.fc1(x))))
    mp1_output = self.mp2(relu2_output)
    fc3_output = self.fc3(mp1_output)
    mp2_output = self.mp2(fc3_output).view(-1, 144)
    return self.fc10(mp2_output)


class TorchCNN4(torch.nn.Module):  # model_cnn4 / model_cnn4_sigmoid
  def __init__(self, act):
    super().__init__()
    self.fc1, self.fc2 = _conv(1, 16, 3), _conv(16, 8, 5)
    self.fc3, self.fc4 = _conv(8, 8, 3), _conv(8, 16, 5)
    self.act = act
    self.mp2 = torch.nn.MaxPool2d(kernel_size=2, stride=2)
    self.fc10 = torch.nn.Linear(144, 10)

  def forward(self, x):
    relu3_output = self.act(self.fc3(self.act(self.fc2(self.act(self.fc1(x))))))
    mp1_output = self.mp2(relu3_output)
    relu4_output = self.act(self.fc4(mp1_output))
    mp2_output = self.mp2(relu4_output).view(-1, 144)
    return self.fc10(mp2_output)


class TorchCNN5(torch.nn.Module):  # model_cnn5 / model_cnn5_sigmoid
  def __init__(self, act):
    super().__init__()
    self.fc1, self.fc2, self.fc3 = _conv(1, 16, 3), _conv(16, 8, 3), _conv(8, 8, 3)
    self.fc4, self.fc5, self.fc6 = _conv(8, 8, 3), _conv(8, 16, 3), _conv(16, 16, 3)
    self.act = act
    self.mp2 = torch.nn.MaxPool2d(kernel_size=2, stride=2)
    self.fc10 = torch.nn.Linear(144, 10)

  def forward(self, x):
    relu3_output = self.act(self.fc3(self.act(self.fc2(self.act(self.fc1(x))))))
    relu4_output = self.act(self.fc4(relu3_output))
    mp1_output = self.mp2(relu4_output)
    relu6_output = self.act(self.fc6(self.act(self.fc5(mp1_output))))
    mp2_output = self.mp2(relu6_output).view(-1, 144)
    return self.fc10(mp2_output)


TORCH_SEED002 = {"mlp1": TorchMLP1, "mlp2": TorchMLP2, "cnn3": TorchCNN3, "cnn4": TorchCNN4,
                 "cnn5": TorchCNN5}
TORCH_ACTIVATIONS = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}


def _ours_to_torch(params):
  """Our layers in order, as (weight, bias) in torch's layouts.

  Dense kernels (in, out) → (out, in); convolution kernels HWIO → OIHW.
  """
  blocks = [params[k] for k in ("layers", "convs") if k in params]
  layers = [block[i] for block in blocks for i in sorted(block)]
  layers.append(params["out"] if "out" in params else params["fc10"])
  out = []
  for layer in layers:
    kernel = np.asarray(layer["kernel"])
    weight = kernel.T if kernel.ndim == 2 else kernel.transpose(3, 2, 0, 1)
    out.append((np.ascontiguousarray(weight), np.array(layer["bias"])))
  return out


@pytest.mark.parametrize("activation", sorted(TORCH_ACTIVATIONS))
@pytest.mark.parametrize("name", models.SEED002_MODELS)
def test_seed002_models_give_the_seed_torch_logits(name, activation):
  spec = models.seed002(name, activation)
  params = spec.init(jax.random.key(0))
  net = TORCH_SEED002[name](TORCH_ACTIVATIONS[activation]())
  torch_layers = [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
  ours = _ours_to_torch(params)
  assert [tuple(m.weight.shape) for m in torch_layers] == [w.shape for w, _ in ours]
  with torch.no_grad():
    for module, (weight, bias) in zip(torch_layers, ours):
      module.weight.copy_(torch.tensor(weight))
      module.bias.copy_(torch.tensor(bias))
  # The seed's images are (n, 1, 28, 28); with one channel that is our
  # (n, 28, 28, 1) in the same memory order. Two images in [0, 1] like the
  # seed's ToTensor() output, two normal draws so that activations see both signs.
  images = np.array(jax.random.normal(jax.random.key(1), (4, 1, 28, 28)), np.float32)
  images[:2] = np.abs(images[:2]) / np.abs(images[:2]).max()
  with torch.no_grad():
    expected = net(torch.from_numpy(images)).numpy()
  x = images.reshape(4, 28, 28, 1)
  np.testing.assert_allclose(spec.apply(params, jnp.asarray(x)), expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(spec.apply(params, jnp.asarray(x.reshape(4, 784))), expected,
                             rtol=1e-4, atol=1e-5)
  assert spec.name == f"seed002-{name}" + ("" if activation == "relu" else "-sigmoid")


def test_seed002_rejects_unknown_names_and_activations():
  with pytest.raises(ValueError, match="cnn6"):
    models.seed002("cnn6")
  with pytest.raises(ValueError, match="tanh"):
    models.seed002("mlp1", "tanh")


# --------------------------------------------------------------------------
# The paper's MLPs (Net), the benchmarks' deep MLP and the logistic regression.

def _numpy_dense_forward(layers, x):
  """ReLU after every layer but the last; layers are {'kernel', 'bias'} dicts."""
  x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  for i, layer in enumerate(layers):
    x = x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
    if i < len(layers) - 1:
      x = np.maximum(x, 0.0)
  return x


@pytest.mark.parametrize("hidden", [(5,), (5, 4), (7, 6, 5)])
def test_deep_mlp_is_relu_layers_then_a_linear_output(hidden):
  spec = models.deep_mlp(6, hidden, 3)
  assert spec.name == "mlp" + "-".join(map(str, (6, *hidden, 3)))
  params = spec.init(jax.random.key(0))
  layers = [params["layers"][i] for i in sorted(params["layers"])] + [params["out"]]
  sizes = (6, *hidden, 3)
  assert [layer["kernel"].shape for layer in layers] == list(zip(sizes[:-1], sizes[1:]))
  assert models.num_params(params) == sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
  for layer, fan_in in zip(layers, sizes[:-1]):  # torch.nn.Linear's default init
    assert all(float(jnp.max(jnp.abs(leaf))) <= 1 / np.sqrt(fan_in) for leaf in layer.values())
  x = jax.random.normal(jax.random.key(1), (8, 2, 3))  # flattened inside to (8, 6)
  np.testing.assert_allclose(spec.apply(params, x), _numpy_dense_forward(layers, x),
                             rtol=1e-5, atol=1e-6)


def test_the_paper_mlp_and_the_logistic_regression():
  x = jax.random.normal(jax.random.key(1), (8, 4))
  mlp = models.mlp(4, 8, 3)
  p = mlp.init(jax.random.key(0))
  assert mlp.name == "mlp4-8-3" and models.num_params(p) == 4 * 8 + 8 + 8 * 3 + 3
  np.testing.assert_allclose(mlp.apply(p, x), _numpy_dense_forward([p["fc1"], p["fc2"]], x),
                             rtol=1e-5, atol=1e-6)
  logreg = models.logistic_regression(4, 3)
  q = logreg.init(jax.random.key(0))
  assert logreg.name == "logreg4-3" and models.num_params(q) == 4 * 3 + 3
  np.testing.assert_allclose(logreg.apply(q, x), _numpy_dense_forward([q["fc"]], x),
                             rtol=1e-5, atol=1e-6)
  # Different keys, different weights; the same key, the same weights.
  assert not np.allclose(p["fc1"]["kernel"], mlp.init(jax.random.key(1))["fc1"]["kernel"])
  np.testing.assert_array_equal(p["fc1"]["kernel"], mlp.init(jax.random.key(0))["fc1"]["kernel"])
