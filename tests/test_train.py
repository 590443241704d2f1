"""The paired trainer: both arms of a seed share initial weights and batches."""

import time

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import optax

import homax
from conftest import assert_trees_identical
from experiments import datasets, models, train


def _trainer(step):
  """Adam vs Adam + homogeneity whose step optimizer is ``step``."""
  return train.PairedTrainer(
      model=models.mlp(4, 8, 3),
      make_homogeneity_tx=lambda avg: optax.chain(
          optax.adam(1e-2), homax.homogeneity(1e-2, step=step, initial_average=avg)),
      adam_tx=optax.adam(1e-2),
      batch_size=32,
  )


def test_arms_share_initial_weights_and_batches():
  """With a zero homogeneity step the two arms must be bit-identical, epoch by epoch.

  Any difference in initial weights, batch order or batch contents between the
  arms would show up here; with a real homogeneity step they differ.
  """
  data = datasets.load("iris")
  seeds = np.arange(3)
  same = train.train_paired(_trainer(optax.set_to_zero()), data, epochs=3, seeds=seeds)
  assert_trees_identical(same.final_params_h, same.final_params_a)
  np.testing.assert_array_equal(same.history["train_loss_h"], same.history["train_loss_a"])
  np.testing.assert_array_equal(same.test_acc_h, same.test_acc_a)
  real = train.train_paired(_trainer("adam"), data, epochs=3, seeds=seeds)
  diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), real.final_params_h, real.final_params_a)
  assert max(jax.tree.leaves(diff)) > 1e-3
  # The plain arm does not depend on the other arm's optimizer.
  assert_trees_identical(same.final_params_a, real.final_params_a)


def test_seeds_differ_and_average_is_an_independent_init():
  trainer = _trainer("adam")
  carry, keys = trainer.init(np.arange(2))
  w = carry.params_h["fc1"]["kernel"]
  assert not np.array_equal(w[0], w[1])  # each seed its own weights
  avg = homax.find_state(carry.state_h).running_average["fc1"]["kernel"]
  assert not np.array_equal(avg[0], w[0])  # the seed's second, independent Net()
  assert np.max(np.abs(avg)) <= 1 / np.sqrt(4)  # torch's U(±1/√fan_in)
  assert not np.array_equal(jax.random.key_data(keys[0]), jax.random.key_data(keys[1]))


def test_vmapped_seeds_equal_single_seed_runs():
  """A seed's result does not depend on which other seeds run beside it."""
  data = datasets.load("iris")
  both = train.train_paired(_trainer("adam"), data, epochs=2, seeds=np.array([0, 5]))
  one = train.train_paired(_trainer("adam"), data, epochs=2, seeds=np.array([5]))
  np.testing.assert_allclose(both.test_acc_h[1:], one.test_acc_h)
  np.testing.assert_allclose(
      both.final_params_h["fc2"]["kernel"][1], one.final_params_h["fc2"]["kernel"][0], rtol=1e-5, atol=1e-6)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**32 - 1),
    n=st.one_of(st.integers(0, 12), st.sampled_from([120, 255, 256, 257])),
)
def test_permutation_is_jax_random_permutation_bit_for_bit(seed, n):
  """The trainer's counting shuffle gives jax's permutation exactly (jit, vmap)."""
  key = jax.random.key(seed)
  keys = jax.random.split(key, 3)
  expected = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
  got = jax.jit(jax.vmap(lambda k: train.permutation(k, n)))(keys)
  assert got.dtype == expected.dtype
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(keys=st.lists(st.integers(0, 3) | st.integers(0, 2**32 - 1), max_size=60))
def test_stable_sort_by_keeps_ties_in_order(keys):
  """Ties (forced by drawing keys from 0..3) keep their order, as lax.sort_key_val's stable sort."""
  k = np.asarray(keys, np.uint32)
  values = np.arange(len(keys), dtype=np.int32) * 7 - 3
  _, expected = jax.lax.sort_key_val(k, values)
  got = jax.jit(train.stable_sort_by)(k, values)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  np.testing.assert_array_equal(np.asarray(got), values[np.argsort(k, kind="stable")])


def test_history_arrays_have_the_seed_axis_first():
  # Each epoch appends a (seeds,) value per per-epoch field and a (seeds, steps)
  # block per per-step field: the arrays are (seeds, epochs) and (seeds, all steps).
  history = train.History()
  seeds, epochs, steps = 2, 3, 4
  for epoch in range(epochs):
    history.val_acc_h.append(np.arange(seeds) * 10.0 + epoch)
    history.similarity.append(np.arange(seeds * steps).reshape(seeds, steps) + 100.0 * epoch)
  arrays = history.arrays()
  assert sorted(arrays) == ["similarity", "val_acc_h"]  # fields never appended are left out
  np.testing.assert_array_equal(arrays["val_acc_h"], [[0, 1, 2], [10, 11, 12]])
  assert arrays["similarity"].shape == (seeds, epochs * steps)
  np.testing.assert_array_equal(arrays["similarity"][1], [4, 5, 6, 7, 104, 105, 106, 107, 204, 205, 206, 207])
  # One epoch is (seeds, 1) too.
  single = train.History()
  single.val_acc_h.append(np.arange(seeds) * 1.0)
  assert single.arrays()["val_acc_h"].shape == (seeds, 1)


def test_cross_entropy_is_the_mean_over_real_samples():
  logits = jax.random.normal(jax.random.key(0), (5, 3))
  labels = np.array([0, 2, 1, 1, 0])
  per = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  full = train.cross_entropy(logits, labels, np.ones(5, np.float32))
  np.testing.assert_allclose(full, per.mean(), rtol=1e-6)
  # Padding (mask 0) is left out of both the sum and the count.
  mask = np.array([1, 1, 0, 1, 0], np.float32)
  np.testing.assert_allclose(train.cross_entropy(logits, labels, mask), per[mask == 1].mean(), rtol=1e-6)
  one = np.array([0, 0, 1, 0, 0], np.float32)
  np.testing.assert_allclose(train.cross_entropy(logits, labels, one), per[2], rtol=1e-6)
  assert float(train.cross_entropy(logits, labels, np.zeros(5, np.float32))) == 0.0  # no 0/0


def test_epoch_records_count_real_samples_of_padded_batches():
  # Frozen arms (zero updates) on Iris's 90 training samples in batches of 32:
  # three batches, the last padded with 6 copies of sample 0. Each epoch's
  # training accuracy is then the frozen model's accuracy on the 90 real
  # samples, and its training loss the mean over batches of each batch's mean
  # over its real samples, in the epoch's shuffled order.
  data = datasets.load("iris")
  frozen = train.PairedTrainer(
      model=models.mlp(4, 8, 3),
      make_homogeneity_tx=lambda avg: optax.chain(
          optax.set_to_zero(), homax.homogeneity(1e-2, step=optax.set_to_zero(), initial_average=avg)),
      adam_tx=optax.set_to_zero(),
      batch_size=32,
  )
  seeds, epochs = np.array([0, 1]), 2
  start = time.perf_counter()
  result = train.train_paired(frozen, data, epochs=epochs, seeds=seeds)
  assert 0 < result.seconds < time.perf_counter() - start  # the training time, within the call
  carry, shuffle_keys = frozen.init(seeds)
  assert_trees_identical(result.final_params_h, carry.params_h)
  x, y = np.asarray(data.x_train), np.asarray(data.y_train)
  assert len(y) == 90 and frozen.steps_per_epoch(90) == 3
  for s in range(len(seeds)):
    for arm, params in (("h", carry.params_h), ("a", carry.params_a)):
      p = jax.tree.map(lambda leaf: leaf[s], params)
      logits = np.asarray(frozen.model.apply(p, x))
      per = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, y))
      correct = np.sum(np.argmax(logits, -1) == y)
      for epoch in range(epochs):
        np.testing.assert_allclose(result.history[f"train_acc_{arm}"][s, epoch], 100.0 * correct / 90,
                                   rtol=1e-6)
        order = np.asarray(train.permutation(jax.random.fold_in(shuffle_keys[s], epoch), 90))
        batch_means = [per[order[k:k + 32]].mean() for k in range(0, 90, 32)]
        np.testing.assert_allclose(result.history[f"train_loss_{arm}"][s, epoch], np.mean(batch_means),
                                   rtol=1e-5)
