r"""Regular against Sobolev training on one 2-D benchmark function.

The demo of `make demo`: an MLP (2 hidden layers of 256 ReLU units, the
paper's regression model) is fitted to a few points of a benchmark function,
once on values only and once on values and gradients, with the same optimiser,
steps and batches; both are scored on a held-out uniform sample.

    python -m launch.demo --function=styblinski_tang --train_points=100
"""

import time
from typing import Dict

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import sobolev_tf
from sobolev_tf.tasks import functions

_FUNCTION = flags.DEFINE_enum(
  "function",
  "styblinski_tang",
  list(functions.PAPER_FUNCTIONS),
  "Benchmark function to fit.",
)
_TRAIN_POINTS = flags.DEFINE_integer(
  "train_points", 100, "Training points, uniform on the domain."
)
_TEST_POINTS = flags.DEFINE_integer(
  "test_points", 10_000, "Held-out points, uniform on the domain."
)
_STEPS = flags.DEFINE_integer("steps", 2000, "Optimiser steps per model.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 3e-4, "Adam step size.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data and initialisation.")


def _targets(
  function: functions.BenchmarkFunction, x: np.ndarray
) -> Dict[str, np.ndarray]:
  return {
    "value": function.value(x).numpy(),  # [B, 1]
    "d1": function.gradient(x).numpy()[:, None, :],  # [B, 1, 2]
  }


def _mlp(seed: int) -> keras.Model:
  keras.utils.set_random_seed(seed)
  return keras.Sequential(
    [
      keras.Input((2,)),
      keras.layers.Dense(256, activation="relu"),
      keras.layers.Dense(256, activation="relu"),
      keras.layers.Dense(1),
    ]
  )


def train_and_score(order: int, train: tuple, test: tuple) -> Dict[str, float]:
  """Fits one model of Sobolev order `order` and scores it on `test`.

  Args:
    order: 0 for regular training, 1 for values and gradients.
    train: `(x, targets)` to fit.
    test: `(x, targets)` to score.

  Returns:
    Test MSE of values and of gradients, and the training time in seconds.
  """
  x_train, y_train = train
  model = sobolev_tf.SobolevModel(_mlp(_SEED.value), order=order)
  model.compile(optimizer=keras.optimizers.Adam(_LEARNING_RATE.value))
  dataset = (
    tf.data.Dataset.from_tensor_slices(
      (x_train, {k: y_train[k] for k in ("value", "d1")[: order + 1]})
    )
    .shuffle(len(x_train), seed=_SEED.value)
    .repeat()
    .batch(_BATCH_SIZE.value)
  )
  start = time.perf_counter()
  model.fit(
    dataset, steps_per_epoch=_STEPS.value, epochs=1, shuffle=False, verbose=0
  )
  seconds = time.perf_counter() - start
  x_test, y_test = test
  # Score both models alike: with the order-1 objective on the test set.
  scorer = sobolev_tf.SobolevModel(model.model, order=1)
  scorer.compile()
  scores = scorer.evaluate(
    x_test, y_test, batch_size=1000, verbose=0, return_dict=True
  )
  return {
    "value_mse": scores["value_loss"],
    "gradient_mse": scores["d1_loss"],
    "seconds": seconds,
  }


def main(argv):
  """Fits both models and prints their test errors."""
  del argv
  function = functions.get_function(_FUNCTION.value)
  x_train = function.sample(_TRAIN_POINTS.value, seed=_SEED.value)
  x_test = function.sample(_TEST_POINTS.value, seed=_SEED.value + 10_000)
  train = (x_train, _targets(function, x_train))
  test = (x_test, _targets(function, x_test))
  print(
    f"{function.name}: {_TRAIN_POINTS.value} training points, "
    f"{_TEST_POINTS.value} test points, {_STEPS.value} Adam steps of "
    f"batch {_BATCH_SIZE.value}, seed {_SEED.value}"
  )
  rows = {
    "regular": train_and_score(0, train, test),
    "Sobolev": train_and_score(1, train, test),
  }
  print("| training | test value MSE | test gradient MSE | train seconds |")
  print("|---|---|---|---|")
  for name, row in rows.items():
    print(
      f"| {name} | {row['value_mse']:.4g} | {row['gradient_mse']:.4g} | "
      f"{row['seconds']:.1f} |"
    )


if __name__ == "__main__":
  app.run(main)
