"""Tests for benchmarks.sweep_benchmark: a sweep's floor from its steps."""

import json

import tensorflow as tf

from benchmarks import sweep_benchmark
from launch import loop
from sobolev_tf.tasks import regression


def _record(**overrides):
  config = regression.RunConfig(
    function="booth", dim=2, train_size=20, method="sobolev", seed=0, steps=6
  )
  record = {
    name: getattr(config, name)
    for name in regression.RunConfig.__dataclass_fields__
  }
  # As the launcher writes it: through JSON (tuples become lists).
  record = json.loads(json.dumps(record))
  record.update(overrides)
  return record


class SweepBenchmarkTest(tf.test.TestCase):
  def test_seeds_share_a_program_methods_and_batches_do_not(self):
    key = sweep_benchmark.program
    self.assertEqual(key(_record(seed=0)), key(_record(seed=4)))
    self.assertNotEqual(key(_record()), key(_record(method="regular")))
    # The batch is capped at the training set's size.
    self.assertEqual(
      key(_record(train_size=20, batch_size=32)),
      key(_record(train_size=20, batch_size=20)),
    )
    self.assertNotEqual(
      key(_record(train_size=100)), key(_record(train_size=20))
    )

  def test_step_seconds_times_the_runs_own_step(self):
    settings = loop.Settings(steps_per_execution=3, jit_compile=False)
    seconds = sweep_benchmark.step_seconds(_record(), settings, repeats=2)
    # One small step of a 256-256 MLP: well above a microsecond, well
    # below a second on any host.
    self.assertBetween(seconds, 1e-6, 1.0)


if __name__ == "__main__":
  tf.test.main()
