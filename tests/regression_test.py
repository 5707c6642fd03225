"""Tests for sobolev_tf.tasks.regression."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import testing
from sobolev_tf.tasks import functions
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_model

testing.configure_logical_cpus(2)


# Training values of mean 0 and spread 1: the output layer is the identity.
_UNIT = {"value": np.array([[-1.0], [1.0]], "float32")}


def _config(**kwargs):
  defaults = dict(
    function="booth",
    dim=2,
    train_size=16,
    method="sobolev",
    seed=0,
    steps=40,
    batch_size=8,
    test_size=64,
  )
  return regression.RunConfig(**{**defaults, **kwargs})


class RegressionTest(tf.test.TestCase, parameterized.TestCase):
  def test_targets_follow_the_data_convention(self):
    function = functions.get_function("styblinski_tang", 3)
    x = function.sample(5, seed=0)
    targets = regression.targets(function, x, order=2)
    self.assertEqual(targets["value"].shape, (5, 1))
    self.assertEqual(targets["d1"].shape, (5, 1, 3))
    self.assertEqual(targets["d2"].shape, (5, 1, 3, 3))
    self.assertAllClose(targets["d1"][:, 0], function.gradient(x))

  def test_finite_difference_targets_match_analytic(self):
    function = functions.get_function("rosenbrock")
    x = function.sample(20, seed=1)
    exact = regression.targets(function, x, 1)["d1"]
    estimated = regression.targets(function, x, 1, finite_difference=True)
    # Central differences of a quartic in float64: relative error ~1e-8,
    # then rounded to float32.
    self.assertAllClose(estimated["d1"], exact, rtol=1e-5, atol=1e-3)

  def test_network_works_in_original_units(self):
    config = _config()
    function = functions.get_function(config.function)
    (x, y), _ = regression.make_data(config, function)
    model = regression_model.build_model(config, function, y)
    # An untrained network predicts about the training mean, in original
    # units, because its output layer undoes the standardisation.
    prediction = model.predict(x, verbose=0)
    self.assertAllClose(np.mean(prediction), np.mean(y["value"]), rtol=0.5)
    self.assertEqual(model.objective.config.order, 1)
    self.assertLen(model.trainable_weights, 6)

  @parameterized.parameters(
    "regular",
    "sobolev",
    "stochastic",
    "sobolev_fd",
    "sobolev2",
    "stochastic2",
    "sobolev_missing",
    "directional",
  )
  def test_training_reduces_test_error(self, method):
    config = _config(method=method, steps=200, train_size=64)
    function = functions.get_function(config.function)
    (x, y), (x_test, y_test) = regression.make_data(config, function)
    model = regression_model.build_model(config, function, y)
    before = regression_model.evaluate(model.model, x_test, y_test)
    model.compile(optimizer=regression_model.build_optimizer(config))
    model.fit(
      regression.train_dataset(x, y, config.batch_size, config.seed),
      steps_per_epoch=config.steps,
      epochs=1,
      verbose=0,
    )
    after = regression_model.evaluate(model.model, x_test, y_test)
    self.assertLess(after["test_mse"], before["test_mse"])

  def test_derivative_weight_scales_the_derivative_terms(self):
    config = _config(method="sobolev2", derivative_weight=10.0)
    self.assertEndsWith(config.run_id, "-sobolev2-w10-s0")
    function = functions.get_function(config.function)
    (_, y), _ = regression.make_data(config, function)
    weights = regression_model.build_model(
      config, function, y
    ).objective.config.loss_weights
    self.assertAllClose(np.array(weights) / weights[0], [1.0, 10.0, 10.0])

  def test_missing_gradient_entries(self):
    config = _config(method="sobolev_missing", train_size=400)
    (_, y), _ = regression.make_data(config)
    unknown = np.isnan(y["d1"])
    self.assertAllClose(unknown.mean(), 0.5, atol=0.05)
    full = regression.targets(
      regression.get_function(config), regression.make_data(config)[0][0], 1
    )
    self.assertAllEqual(y["d1"][~unknown], full["d1"][~unknown])
    model = regression_model.build_model(
      config, regression.get_function(config), y
    )
    self.assertEqual(model.objective.config.nonfinite_targets, "missing")

  def test_directional_targets_are_derivatives_along_unit_directions(self):
    config = _config(method="directional")
    function = regression.get_function(config)
    (x, y), _ = regression.make_data(config)
    self.assertNotIn("d1", y)
    directions = y["d1_directions"]  # [B, 1, 2]
    self.assertAllClose(np.linalg.norm(directions, axis=-1), np.ones((16, 1)))
    gradient = function.gradient(x.astype("float64")).numpy()  # [B, 2]
    self.assertAllClose(
      y["d1_directional"][:, 0, 0],
      np.sum(gradient * directions[:, 0], axis=-1),
      rtol=1e-5,
    )

  @parameterized.parameters(("sum", 2.0), ("mean", 1.0))
  def test_gradient_loss(self, gradient_loss, factor):
    config = _config(gradient_loss=gradient_loss, balance="none")
    function = regression.get_function(config)
    (x, y), _ = regression.make_data(config, function)
    model = regression_model.build_model(config, function, y)
    model.compile()
    d1 = model.evaluate(x, y, verbose=0, return_dict=True)["d1_loss"]
    # `evaluate` scores the mean over input dimensions; the sum is 2 x it.
    mean = regression_model.evaluate(model.model, x, y)["test_gradient_mse"]
    self.assertAllClose(d1, factor * mean, rtol=1e-5)

  def test_balance_none_keeps_the_earlier_weights(self):
    config = _config(balance="none", derivative_weight=3.0)
    function = regression.get_function(config)
    (_, y), _ = regression.make_data(config, function)
    model = regression_model.build_model(config, function, y)
    variance = max(float(np.std(y["value"])), 1e-6) ** 2
    self.assertAllClose(
      model.objective.config.loss_weights, [1 / variance, 3 / variance]
    )
    self.assertEqual(model.objective.config.balance, "none")

  def test_paper_and_standard_domains(self):
    paper = regression.get_function(_config(function="ackley"))
    standard = regression.get_function(
      _config(function="ackley", domain="standard")
    )
    self.assertAllEqual(paper.upper, [5.0, 5.0])
    self.assertAllClose(standard.upper, [32.768, 32.768])

  def test_second_order_needs_smooth_function(self):
    config = _config(function="bukin_n6", method="sobolev2")
    with self.assertRaisesRegex(ValueError, "not twice differentiable"):
      regression.make_data(config)

  def test_test_set_is_fixed(self):
    _, (a, _) = regression.make_data(_config(seed=0))
    _, (b, _) = regression.make_data(_config(seed=5))
    self.assertAllEqual(a, b)

  def test_run_id(self):
    self.assertEqual(_config().run_id, "booth-d2-n16-sobolev-s0")
    self.assertEqual(
      _config(activation="softplus").run_id, "booth-d2-n16-sobolev-softplus-s0"
    )
    self.assertEqual(
      _config(domain="standard", balance="none", gradient_loss="mean").run_id,
      "booth-d2-n16-sobolev-standard-none-mean-s0",
    )

  @parameterized.parameters(
    dict(method="exact"),
    dict(domain="nosuch"),
    dict(balance="gradnorm"),
    dict(gradient_loss="max"),
  )
  def test_invalid_choice(self, **kwargs):
    ((name, value),) = kwargs.items()
    with self.assertRaisesRegex(ValueError, f"`{name}`.*{name}='{value}'"):
      _config(**kwargs)

  @parameterized.parameters(
    dict(train_size=0),
    dict(test_size=0),
    dict(steps=-1),
    dict(batch_size=0),
    dict(seed=-1),
    dict(dim=0),
    dict(cycle_steps=-1),
  )
  def test_invalid_sizes(self, **kwargs):
    ((name, value),) = kwargs.items()
    with self.assertRaisesRegex(ValueError, f"Received: {name}={value}"):
      _config(**kwargs)

  @parameterized.parameters(
    (1000, 2000, 1),
    (3999, 2000, 1),
    (4000, 2000, 2),
    (50_000, 2000, 25),
    (50_000, 0, 1),
  )
  def test_cycles(self, steps, cycle_steps, cycles):
    self.assertEqual(
      _config(steps=steps, cycle_steps=cycle_steps).cycles, cycles
    )

  def test_one_cycle_is_the_cosine_over_the_run(self):
    self.assertEqual(_config(steps=50_000).cycles, 1)
    schedule = regression_model.learning_rate_schedule(_config(steps=1500))
    self.assertIsInstance(schedule, keras.optimizers.schedules.CosineDecay)
    self.assertEqual(schedule.decay_steps, 1500)

  def test_learning_rate_ends_every_cycle_at_zero_and_restarts(self):
    config = _config(steps=10_000, cycle_steps=2000, learning_rate=1e-3)
    schedule = regression_model.learning_rate_schedule(config)
    one_cycle = regression_model.learning_rate_schedule(
      _config(steps=2000, learning_rate=1e-3)
    )
    for cycle in range(5):
      start = cycle * 2000
      self.assertAllClose(schedule(start), 1e-3)
      self.assertLess(float(schedule(start + 1999)), 1e-8)
      for step in (1, 500, 1000, 1700):
        self.assertAllClose(schedule(start + step), one_cycle(step), atol=1e-9)
    self.assertEndsWith(config.run_id, "-c2000-s0")
    self.assertEndsWith(_config().run_id, "-sobolev-s0")

  def test_network_is_seeded_without_global_state(self):
    config = _config()
    function = functions.get_function(config.function)
    first = regression_model.build_network(config, function, _UNIT)
    tf.random.set_seed(5)
    keras.utils.set_random_seed(7)
    np.random.uniform()
    again = regression_model.build_network(config, function, _UNIT)
    other = regression_model.build_network(_config(seed=1), function, _UNIT)
    for a, b, c in zip(
      first.weights, again.weights, other.weights, strict=True
    ):
      self.assertAllEqual(a, b)
      if "kernel" in a.path:
        self.assertNotAllEqual(a, c)

  def test_network_starts_where_a_global_seed_started_it(self):
    # The weights of runs made before the seeds became explicit.
    config = _config(seed=3)
    function = functions.get_function(config.function)
    keras.utils.set_random_seed(3)
    layers = [
      keras.Input((2,)),
      keras.layers.Normalization(mean=0.0, variance=1.0),
    ]
    layers += [keras.layers.Dense(w, "relu") for w in config.hidden_sizes]
    reference = keras.Sequential([*layers, keras.layers.Dense(1)])
    network = regression_model.build_network(config, function, _UNIT)
    kernels = [w for w in network.weights if "kernel" in w.path]
    expected = [w for w in reference.weights if "kernel" in w.path]
    for a, b in zip(kernels, expected, strict=True):
      self.assertAllEqual(a, b)


if __name__ == "__main__":
  tf.test.main()
