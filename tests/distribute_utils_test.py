"""Tests for sobolev_tf.distribute_utils."""

from absl.testing import parameterized
import tensorflow as tf

from sobolev_tf import distribute_utils
from sobolev_tf import testing

testing.configure_logical_cpus(2)


def _per_replica(strategy, fn):
  """`fn()` on every replica of `strategy`, as a list."""
  values = strategy.run(tf.function(fn))
  return [t.numpy() for t in strategy.experimental_local_results(values)]


class ConfigureLogicalCpusTest(tf.test.TestCase, parameterized.TestCase):
  def test_devices_are_split(self):
    self.assertLen(tf.config.list_logical_devices("CPU"), 2)
    distribute_utils.configure_logical_cpus(2)  # what is there: no error

  def test_another_count_after_initialisation_is_an_error(self):
    tf.config.list_logical_devices("CPU")  # initialises the devices
    with self.assertRaisesRegex(RuntimeError, "already runs on 2 logical"):
      distribute_utils.configure_logical_cpus(3)

  @parameterized.parameters(0, -1, True, 1.5)
  def test_count_must_be_a_positive_int(self, count):
    with self.assertRaisesRegex(ValueError, f"Received: count={count!r}"):
      distribute_utils.configure_logical_cpus(count)


class ReplicaContextTest(tf.test.TestCase):
  def test_outside_a_strategy(self):
    self.assertEqual(distribute_utils.num_replicas(), 1)
    self.assertEqual(distribute_utils.replica_id(), 0)
    self.assertEqual(distribute_utils.replica_scale(), 1.0)

  def test_inside_two_replicas(self):
    strategy = testing.mirrored_strategy()
    self.assertEqual(
      _per_replica(strategy, distribute_utils.replica_id), [0, 1]
    )
    self.assertEqual(
      _per_replica(
        strategy, lambda: tf.constant(distribute_utils.replica_scale())
      ),
      [0.5, 0.5],
    )


class StepSeedTest(tf.test.TestCase):
  def test_depends_on_seed_and_step_only(self):
    seed = distribute_utils.step_seed(3, 7)
    self.assertEqual(seed.shape, [2])
    self.assertAllEqual(seed, distribute_utils.step_seed(3, tf.constant(7)))
    self.assertAllEqual(
      seed, distribute_utils.step_seed(3, tf.Variable(7, dtype=tf.int64))
    )
    self.assertNotAllEqual(seed, distribute_utils.step_seed(3, 8))
    self.assertNotAllEqual(seed, distribute_utils.step_seed(4, 7))

  def test_replica_zero_draws_what_one_device_draws(self):
    strategy = testing.mirrored_strategy()
    first, second = _per_replica(
      strategy, lambda: distribute_utils.step_seed(3, 7)
    )
    self.assertAllEqual(first, distribute_utils.step_seed(3, 7))
    self.assertNotAllEqual(first, second)


if __name__ == "__main__":
  tf.test.main()
