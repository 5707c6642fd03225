"""A short regression training under any strategy, for the cluster tests.

Trains the regression task's model with the launchers' loop and writes, per
worker, its final weights and its loss after every loop to
`<workdir>/worker_<index>.npz` (index 0 outside a cluster), so that a test
can compare the workers of a `MultiWorkerMirroredStrategy` run with each
other and with a single-process run.
"""

import os

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from launch import common
from launch import loop
from sobolev_tf.tasks import functions
from sobolev_tf.tasks import regression

_STEPS = flags.DEFINE_integer("steps", 60, "Training steps.")
_COMMON = common.define_common_flags()


def main(argv):
  del argv
  strategy = common.setup(_COMMON)
  workdir = _COMMON["workdir"].value
  config = regression.RunConfig(
    "booth", 2, 100, "sobolev", seed=0, steps=_STEPS.value, batch_size=8
  )
  function = functions.get_function("booth")
  (x, y), _ = regression.make_data(config, function)
  with strategy.scope():
    model = regression.build_model(config, function, y)
    model.compile(optimizer=regression.build_optimizer(config))
    model.optimizer.build(model.trainable_variables)
  history = loop.train_run(
    workdir,
    strategy,
    tf.train.Checkpoint(model=model, optimizer=model.optimizer),
    model.train_step,
    lambda context, step: regression.train_dataset(
      x, y, config.batch_size, config.seed, step, context
    ),
    model.optimizer.iterations,
    config.steps,
    checkpoints=2,
    steps_per_loop=10,
    reset_fn=model.reset_metrics,
  )
  np.savez(
    os.path.join(workdir, f"worker_{loop.task_id(strategy) or 0}.npz"),
    loss=np.array([entry["loss"] for entry in history]),
    replicas=strategy.num_replicas_in_sync,
    **{f"w{i}": v.numpy() for i, v in enumerate(model.model.weights)},
  )


if __name__ == "__main__":
  app.run(main)
