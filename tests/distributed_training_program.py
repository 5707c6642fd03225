"""A short regression run under any strategy, for the cluster tests.

Trains the regression task (`RegressionTask`) with the launchers' loop and
writes, per worker, its final weights to `<workdir>/worker_<index>.npz`
(index 0 outside a cluster), so that a test can compare the workers of a
`MultiWorkerMirroredStrategy` run with each other and with a single-process
run. The run's own files go to `<workdir>/run`.
"""

import os

from absl import flags
import numpy as np

from launch import common
from launch import loop
from launch import strategies
from sobolev_tf.tasks import regression
from sobolev_tf.tasks import regression_task

FLAGS = flags.FlagValues()
_STEPS = flags.DEFINE_integer("steps", 60, "Training steps.", flag_values=FLAGS)
_COMMON = common.define_common_flags(
  FLAGS, steps_per_execution=10, checkpoints_per_run=2
)


def main(argv):
  del argv
  context = common.setup(_COMMON)
  task = regression_task.RegressionTask(
    regression.RunConfig(
      "booth", 2, 100, "sobolev", seed=0, steps=_STEPS.value, batch_size=8
    )
  )
  strategy = context.strategy
  loop.run(
    task, strategy, os.path.join(context.workdir, "run"), context.settings
  )
  worker = strategies.task_id(strategy) or 0
  np.savez(
    os.path.join(context.workdir, f"worker_{worker}.npz"),
    replicas=strategy.num_replicas_in_sync,
    **{f"w{i}": v.numpy() for i, v in enumerate(task.model.model.weights)},
  )


if __name__ == "__main__":
  common.run_main(main, FLAGS)
