"""Tests for sobolev_tf.balance: unit-free terms, their state, invariance."""

import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import model as model_lib
from sobolev_tf import objective as objective_lib
from sobolev_tf import testing

testing.configure_logical_cpus(2)


def _net(in_dim=2, out_dim=1, seed=0, dtype="float32"):
  keras.utils.set_random_seed(seed)
  return keras.Sequential(
    [
      keras.Input((in_dim,), dtype=dtype),
      keras.layers.Dense(8, activation="tanh", dtype=dtype),
      keras.layers.Dense(out_dim, dtype=dtype),
    ]
  )


def _data(num=32, seed=0, scale_x=1.0, scale_y=1.0):
  """f(x) = 3 + sin(x0) cos(x1), x in [-2, 2]^2, with derivatives.

  With `scale_x = a` and `scale_y = b`, the same function in other units:
  inputs `a x`, values `b f`, gradients `b / a df`, Hessians `b / a^2 d2f`.
  """
  x = np.random.default_rng(seed).uniform(-2, 2, (num, 2))
  s0, c0, s1, c1 = (
    np.sin(x[:, 0]),
    np.cos(x[:, 0]),
    np.sin(x[:, 1]),
    np.cos(x[:, 1]),
  )
  value = (3 + s0 * c1)[:, None]
  d1 = np.stack([c0 * c1, -s0 * s1], -1)[:, None]
  d2 = np.stack(
    [np.stack([-s0 * c1, -c0 * s1], -1), np.stack([-c0 * s1, -s0 * c1], -1)], -2
  )[:, None]
  targets = {
    "value": scale_y * value,
    "d1": scale_y / scale_x * d1,
    "d2": scale_y / scale_x**2 * d2,
  }
  cast = lambda a: a.astype("float32")  # noqa: E731
  return cast(scale_x * x), {k: cast(v) for k, v in targets.items()}


class TargetScaleTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.x, self.y = _data(num=8)
    self.net = _net()

  def _order1(self, y=None):
    return {k: v for k, v in (y or self.y).items() if k != "d2"}

  def test_terms_are_relative_errors(self):
    objective = objective_lib.SobolevObjective(order=2, balance="target_scale")
    losses = objective(self.net, self.x, self.y, training=True)
    variance = np.var(self.y["value"])
    self.assertAllClose(
      losses.normalized["value"], losses.terms["value"] / variance, rtol=1e-5
    )
    for key in ("d1", "d2"):
      mean_square = np.mean(np.square(self.y[key]))
      self.assertAllClose(
        losses.normalized[key], losses.terms[key] / mean_square, rtol=1e-5
      )
    self.assertAllClose(losses.total, sum(losses.normalized.values()))

  def test_running_statistics_over_batches(self):
    decay = 0.9
    objective = objective_lib.SobolevObjective(
      order=1, balance="target_scale", balance_decay=decay
    )
    x2, y2 = _data(num=8, seed=1, scale_y=2.0)
    objective(self.net, self.x, self._order1(), training=True)
    losses = objective(self.net, x2, self._order1(y2), training=True)
    # The variance of the blend of the two batches' distributions.
    m1, m2 = np.mean(self.y["value"]), np.mean(y2["value"])
    v1, v2 = np.var(self.y["value"]), np.var(y2["value"])
    blended = (
      decay * v1 + (1 - decay) * v2 + decay * (1 - decay) * (m2 - m1) ** 2
    )
    self.assertAllClose(
      losses.normalized["value"], losses.terms["value"] / blended, rtol=1e-4
    )
    square = decay * np.mean(self.y["d1"] ** 2) + (1 - decay) * np.mean(
      y2["d1"] ** 2
    )
    self.assertAllClose(
      losses.normalized["d1"], losses.terms["d1"] / square, rtol=1e-4
    )
    state = {w.name: float(w.numpy()) for w in objective.balance.weights}
    self.assertAllClose(state["value_mean"], decay * m1 + (1 - decay) * m2)
    self.assertEqual(state["d1_count"], 2 * 8 * 2)

  def test_evaluation_does_not_update(self):
    objective = objective_lib.SobolevObjective(order=1)
    first = objective(self.net, self.x, self._order1())  # Batch's statistics.
    self.assertAllClose(
      first.normalized["value"],
      first.terms["value"] / np.var(self.y["value"]),
      rtol=1e-5,
    )
    self.assertTrue(
      all(float(w.numpy()) == 0 for w in objective.balance.weights)
    )
    objective(self.net, self.x, self._order1(), training=True)
    x2, y2 = _data(num=8, seed=1, scale_y=5.0)
    evaluated = objective(self.net, x2, self._order1(y2))
    self.assertAllClose(
      evaluated.normalized["value"],
      evaluated.terms["value"] / np.var(self.y["value"]),
      rtol=1e-5,
    )

  def test_masked_entries_and_weights_in_the_statistics(self):
    objective = objective_lib.SobolevObjective(order=1)
    mask = np.ones_like(self.y["d1"])
    mask[:, :, 1] = 0
    weight = np.array([1, 1, 1, 1, 0, 0, 0, 0], "float32")
    losses = objective(
      self.net,
      self.x,
      {**self._order1(), "d1_mask": mask},
      sample_weight=weight,
      training=True,
    )
    kept = self.y["d1"][:4, :, 0]
    self.assertAllClose(
      losses.normalized["d1"],
      losses.terms["d1"] / np.mean(np.square(kept)),
      rtol=1e-5,
    )

  def test_unit_free_value_of_an_output_transform_is_left_alone(self):
    objective = objective_lib.SobolevObjective(
      order=1, output_transform="log_softmax"
    )
    teacher = _net(out_dim=3, seed=1)
    losses = objective(_net(out_dim=3), self.x, teacher=teacher, training=True)
    self.assertAllClose(losses.normalized["value"], losses.terms["value"])
    self.assertNotAllClose(losses.normalized["d1"], losses.terms["d1"])

  @parameterized.parameters("targets", "outputs")
  def test_floor_bounds_tiny_derivative_scales(self, value_from):
    # Gradients a million times smaller than the values' variation imply.
    y = {"value": self.y["value"], "d1": 1e-6 * self.y["d1"]}
    weights = [1.0, 1.0] if value_from == "targets" else [0.0, 1.0]
    losses = objective_lib.SobolevObjective(
      order=1, loss_weights=weights, balance_floor=0.1
    )(self.net, self.x, y, training=True)
    prediction = self.net(self.x).numpy()
    value = y["value"] if value_from == "targets" else prediction
    floor = 0.1 * np.std(value) / (np.std(self.x) * np.sqrt(2))
    raw = losses.terms["d1"].numpy()
    self.assertAllClose(losses.normalized["d1"], raw / floor**2, rtol=1e-4)
    free = objective_lib.SobolevObjective(
      order=1, loss_weights=weights, balance_floor=0.0
    )(self.net, self.x, y, training=True)
    self.assertGreater(free.normalized["d1"], 1e6 * losses.normalized["d1"])

  def test_floor_leaves_ordinary_scales_alone(self):
    y = {k: self.y[k] for k in ("value", "d1")}
    floored = objective_lib.SobolevObjective(order=1, balance_floor=0.1)(
      self.net, self.x, y, training=True
    )
    free = objective_lib.SobolevObjective(order=1, balance_floor=0.0)(
      self.net, self.x, y, training=True
    )
    self.assertAllClose(floored.normalized["d1"], free.normalized["d1"])

  def test_zero_targets_have_no_scale(self):
    objective = objective_lib.SobolevObjective(order=1)
    zeros = {k: np.zeros_like(v) for k, v in self.y.items() if k != "d2"}
    losses = objective(self.net, self.x, zeros, training=True)
    self.assertAllClose(losses.normalized["d1"], losses.terms["d1"])


class RunningLossTest(tf.test.TestCase):
  def test_each_term_over_its_running_mean(self):
    x, y = _data(num=8)
    net = _net()
    decay = 0.5
    objective = objective_lib.SobolevObjective(
      order=1, balance="running_loss", balance_decay=decay
    )
    y = {k: y[k] for k in ("value", "d1")}
    first = objective(net, x, y, training=True)
    self.assertAllClose(first.normalized["value"], 1.0)
    self.assertAllClose(first.normalized["d1"], 1.0)
    x2, y2 = _data(num=8, seed=3)
    second = objective(
      net, x2, {k: y2[k] for k in ("value", "d1")}, training=True
    )
    for key in ("value", "d1"):
      running = decay * first.terms[key] + (1 - decay) * second.terms[key]
      self.assertAllClose(
        second.normalized[key], second.terms[key] / running, rtol=1e-5
      )


def _scaled_network(seed, scale_x, scale_y, dtype="float32"):
  """`scale_y * g(x / scale_x)` around the same inner network `g`."""
  inner = _net(seed=seed, dtype=dtype)
  return inner, keras.Sequential(
    [
      keras.Input((2,), dtype=dtype),
      keras.layers.Rescaling(1 / scale_x, dtype=dtype),
      inner,
      keras.layers.Rescaling(scale_y, dtype=dtype),
    ]
  )


class UnitInvarianceTest(tf.test.TestCase, parameterized.TestCase):
  """Rescaling x and y leaves a balanced training trajectory unchanged."""

  def _train(self, balance, order, mode, scale_x, scale_y, floor=0.0):
    x, y = _data(num=32, scale_x=scale_x, scale_y=scale_y)
    y = {k: v for k, v in y.items() if k in ("value", "d1", "d2")[: order + 1]}
    inner, network = _scaled_network(3, scale_x, scale_y)
    model = model_lib.SobolevModel(
      network, order=order, mode=mode, balance=balance, balance_floor=floor
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return inner.get_weights(), history.history

  @parameterized.product(
    balance=["target_scale", "running_loss"],
    order=[1, 2],
    mode=["full", "stochastic"],
  )
  def test_trajectory_is_invariant(self, balance, order, mode):
    base_weights, base = self._train(balance, order, mode, 1.0, 1.0)
    weights, scaled = self._train(balance, order, mode, 255.0, 1000.0)
    for a, b in zip(base_weights, weights, strict=True):
      self.assertAllClose(a, b, rtol=2e-3, atol=2e-4)
    keys = ["value", "d1", "d2"][: order + 1]
    for key in keys:
      self.assertAllClose(
        base[f"{key}_normalized_loss"],
        scaled[f"{key}_normalized_loss"],
        rtol=2e-3,
      )

  @parameterized.parameters(1, 2)
  def test_trajectory_with_a_binding_floor_is_invariant(self, order):
    # A floor of 50 binds: the derivative scales are the floor's.
    base_weights, base = self._train("target_scale", order, "full", 1, 1, 50)
    weights, scaled = self._train("target_scale", order, "full", 255, 1e3, 50)
    for a, b in zip(base_weights, weights, strict=True):
      self.assertAllClose(a, b, rtol=2e-3, atol=2e-4)
    free_weights, _ = self._train("target_scale", order, "full", 1, 1, 0.0)
    self.assertNotAllClose(free_weights[0], base_weights[0])

  def test_without_a_balance_the_trajectory_moves(self):
    base_weights, _ = self._train("none", 1, "full", 1.0, 1.0)
    weights, _ = self._train("none", 1, "full", 255.0, 1000.0)
    self.assertNotAllClose(base_weights[0], weights[0], rtol=2e-3, atol=2e-4)


class StateTest(tf.test.TestCase, parameterized.TestCase):
  def _fit(self, balance, strategy=None, epochs=2, model=None, floor=0.0):
    x, y = _data(num=32)
    y = {k: y[k] for k in ("value", "d1")}
    if model is None:
      with (strategy or tf.distribute.get_strategy()).scope():
        model = model_lib.SobolevModel(
          _net(seed=5), order=1, balance=balance, balance_floor=floor
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    return model, x, y

  @parameterized.parameters(
    ("target_scale", 0.0), ("running_loss", 0.0), ("target_scale", 0.1)
  )
  def test_save_and_load_keep_the_statistics(self, balance, floor):
    model, x, y = self._fit(balance, floor=floor)
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertNotEmpty(loaded.balance.weights)
    for saved, restored in zip(
      model.balance.weights, loaded.balance.weights, strict=True
    ):
      self.assertGreater(abs(float(saved.numpy())), 0.0)
      self.assertAllClose(saved, restored)
    self.assertAllClose(
      loaded.evaluate(x, y, verbose=0, return_dict=True),
      model.evaluate(x, y, verbose=0, return_dict=True),
    )

  @parameterized.parameters(
    ("target_scale", 0.0), ("running_loss", 0.0), ("target_scale", 0.1)
  )
  def test_resume_from_a_checkpoint(self, balance, floor):
    uninterrupted, _, _ = self._fit(balance, epochs=2, floor=floor)
    first, _, _ = self._fit(balance, epochs=1, floor=floor)
    directory = tempfile.mkdtemp(dir=self.get_temp_dir())
    path = tf.train.Checkpoint(model=first, optimizer=first.optimizer).save(
      os.path.join(directory, "ckpt")
    )
    resumed = model_lib.SobolevModel(
      _net(seed=11), order=1, balance=balance, balance_floor=floor
    )
    resumed.compile(optimizer=keras.optimizers.Adam(1e-3))
    resumed.build((None, 2))
    resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).restore(
      path
    ).assert_existing_objects_matched()
    self._fit(balance, epochs=1, model=resumed)
    for a, b in zip(
      uninterrupted.get_weights(), resumed.get_weights(), strict=True
    ):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(
    ("target_scale", 0.0), ("running_loss", 0.0), ("target_scale", 100.0)
  )
  def test_two_replicas_match_one_device(self, balance, floor):
    one, _, _ = self._fit(
      balance, tf.distribute.OneDeviceStrategy("/cpu:0"), floor=floor
    )
    two, _, _ = self._fit(balance, testing.mirrored_strategy(), floor=floor)
    for a, b in zip(one.get_weights(), two.get_weights(), strict=True):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  def test_training_is_deterministic(self):
    a, _, _ = self._fit("target_scale")
    b, _, _ = self._fit("target_scale")
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
      self.assertAllEqual(wa, wb)


if __name__ == "__main__":
  tf.test.main()
