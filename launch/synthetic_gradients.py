r"""Synthetic-gradient sweep (paper Sec. 4.3, Table 1).

Trains one decoupled classifier per (variant, seed) and writes to
`--workdir`:

* `results.jsonl`: one record per finished run (test accuracy, the mean
  cosine between synthetic and true gradients at each split on the test
  set, seconds);
* `table.md`: test accuracy mean ± std over seeds and the mean cosines, per
  variant;
* `runs/<run_id>/`: TensorBoard logs (`train/`: loss, accuracy, each SG
  module's loss `sg_loss_<k>` and the cosine `cosine_<k>` between its
  synthetic gradient and the true one; `test/`: accuracy and cosines) and,
  while the run trains, its checkpoints.

A sweep started again with the same workdir skips finished runs and resumes
an interrupted one from its last checkpoint (`launch/loop.py`).

The measured comparison of docs/RESULTS.md (scikit-learn's digits, a convnet
split at 3 points):

    python -m launch.synthetic_gradients --workdir=/tmp/sg_digits \
      --dataset=digits --num_modules=3 --seeds=3

CIFAR-10 and ImageNet (tensorflow-datasets; ImageNet from `--manual_dir`)
use the same flags with `--dataset=cifar10` or `--dataset=imagenet2012`;
the paper's ImageNet model is `--architecture=resnet50 --num_modules=1` (or
3).
"""

import os
import time
from typing import Any
from typing import Dict
from typing import List

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from launch import common
from launch import loop
from sobolev_tf.tasks import image_data
from sobolev_tf.tasks import synthetic_gradients as sg

_DATASET = flags.DEFINE_enum(
  "dataset", "digits", list(image_data.DATASETS), "Data set."
)
_VARIANTS = flags.DEFINE_list(
  "variants", list(sg.VARIANTS), f"Variants, among {list(sg.VARIANTS)}."
)
_NUM_MODULES = flags.DEFINE_integer(
  "num_modules", 3, "Split points, each with an SG module."
)
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per variant: 0 .. seeds-1.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Training steps per run.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate", 1e-3, "Adam step size of the classifier."
)
_SG_LEARNING_RATE = flags.DEFINE_float(
  "sg_learning_rate", 1e-3, "Adam step size of the SG modules."
)
_GRADIENT_WEIGHT = flags.DEFINE_float(
  "gradient_weight",
  sg.Config.gradient_weight,
  "Weight of the SG modules' gradient terms (mean squared error over h).",
)
_WARMUP_STEPS = flags.DEFINE_integer(
  "warmup_steps", 0, "Steps the SG modules train before they are used."
)
_ARCHITECTURE = flags.DEFINE_enum(
  "architecture",
  "convnet",
  list(sg.ARCHITECTURES),
  "convnet (--channels, --strides) or resnet50 (ImageNet's ResNet-50).",
)
_CHANNELS = flags.DEFINE_list(
  "channels", ["32", "32", "64"], "Channels of the conv blocks."
)
_STRIDES = flags.DEFINE_list("strides", ["1", "1", "2"], "Their strides.")
_BATCH_NORM = flags.DEFINE_bool(
  "batch_norm", False, "Batch normalisation in the conv blocks."
)
_CHECKPOINTS = flags.DEFINE_integer(
  "checkpoints_per_run", 4, "Checkpoints per run."
)
_STEPS_PER_LOOP = flags.DEFINE_integer(
  "steps_per_loop", 100, "Training steps per tf.function call."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets dir.")
_MANUAL_DIR = flags.DEFINE_string(
  "manual_dir", None, "Directory with the ImageNet tar files."
)
_COMMON = common.define_common_flags()


class RunConfig:
  """One run: a `sg.Config`, its seed and the sweep's data settings."""

  def __init__(self, config: sg.Config, seed: int):
    self.config = config
    self.seed = seed
    self.run_id = (
      f"{_DATASET.value}-m{config.num_modules}-{config.variant}-s{seed}"
    )


def _loader_kwargs() -> Dict[str, Any]:
  if _DATASET.value == "digits":
    return {}
  return {"data_dir": _DATA_DIR.value} | (
    {"manual_dir": _MANUAL_DIR.value}
    if _DATASET.value == "imagenet2012"
    else {}
  )


def _train_dataset(
  context: tf.distribute.InputContext, start_step: int, seed: int
) -> tf.data.Dataset:
  per_replica = context.get_per_replica_batch_size(_BATCH_SIZE.value)
  return (
    image_data.load(
      _DATASET.value,
      "train",
      per_replica,
      training=True,
      seed=seed,
      **_loader_kwargs(),
    )
    .skip(start_step * context.num_replicas_in_sync)
    .shard(context.num_input_pipelines, context.input_pipeline_id)
  )


def evaluate(classifier: sg.DecoupledClassifier) -> Dict[str, float]:
  """Test accuracy and mean cosines of synthetic to true gradients."""
  correct, count, cosines = 0, 0, []
  predict = tf.function(classifier.predict_logits)
  align = tf.function(classifier.gradient_cosines)
  for images, labels in image_data.load(
    _DATASET.value, "test", 256, training=False, **_loader_kwargs()
  ):
    logits = predict(images)
    correct += int(
      tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.int32))
    )
    count += int(tf.shape(labels)[0])
    cosines.append([float(c) for c in align(images, labels)])
  result = {"test_accuracy": correct / count}
  if cosines and cosines[0]:
    for split, values in enumerate(np.mean(cosines, axis=0)):
      result[f"test_cosine_{split}"] = float(values)
  return result


def run_one(
  run: RunConfig, run_dir: str, strategy: tf.distribute.Strategy, chief: bool
) -> Dict[str, Any]:
  """Trains and scores one run; returns its result record."""
  keras.utils.set_random_seed(run.seed)
  with strategy.scope():
    classifier = sg.DecoupledClassifier(
      run.config, image_data.IMAGE_SHAPES[_DATASET.value]
    )
  start = time.perf_counter()
  loop.train_run(
    run_dir,
    strategy,
    tf.train.Checkpoint(
      classifier=classifier,
      optimizer=classifier.optimizer,
      sg_optimizer=classifier.sg_optimizer,
    ),
    classifier.train_step,
    lambda context, step: _train_dataset(context, step, run.seed),
    classifier.optimizer.iterations,
    _STEPS.value,
    checkpoints=_CHECKPOINTS.value,
    steps_per_loop=_STEPS_PER_LOOP.value,
  )
  seconds = time.perf_counter() - start
  scores = evaluate(classifier)
  if chief:
    writer = tf.summary.create_file_writer(
      os.path.join(run_dir, "tensorboard", "test")
    )
    with writer.as_default(step=_STEPS.value):
      for name, value in scores.items():
        tf.summary.scalar(f"test/{name}", value)
    writer.close()
  return {
    "run_id": run.run_id,
    "dataset": _DATASET.value,
    "variant": run.config.variant,
    "num_modules": run.config.num_modules,
    "seed": run.seed,
    "steps": _STEPS.value,
    "batch_size": _BATCH_SIZE.value,
    **scores,
    "train_seconds": round(seconds, 2),
  }


def markdown_table(records: List[Dict[str, Any]]) -> str:
  """Test accuracy (mean ± std over seeds) and mean cosines per variant."""
  splits = sorted(
    {k for r in records for k in r if k.startswith("test_cosine_")}
  )
  header = ["variant", "test accuracy (%)"]
  header += [f"cosine at split {k.rsplit('_', 1)[1]}" for k in splits]
  header += ["seeds"]
  lines = [
    "| " + " | ".join(header) + " |",
    "|" + "---|" * len(header),
  ]
  for variant in sg.VARIANTS:
    group = [r for r in records if r["variant"] == variant]
    if not group:
      continue
    mean, std = common.mean_and_std([100 * r["test_accuracy"] for r in group])
    cells = [variant, f"{mean:.1f} ± {std:.1f}"]
    for key in splits:
      values = [r[key] for r in group if key in r]
      cells.append(f"{np.mean(values):.2f}" if values else "–")
    cells.append(str(len(group)))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  """Runs the sweep, then writes and prints the table."""
  del argv
  workdir = _COMMON["workdir"].value
  strategy = common.setup(_COMMON)
  chief = common.is_chief(strategy)
  if _BATCH_SIZE.value % strategy.num_replicas_in_sync:
    raise ValueError(
      f"Received an invalid value for `batch_size`: it must divide among the "
      f"{strategy.num_replicas_in_sync} replicas. Received: "
      f"batch_size={_BATCH_SIZE.value}"
    )
  runs = [
    RunConfig(
      sg.Config(
        variant=variant,
        num_modules=_NUM_MODULES.value,
        architecture=_ARCHITECTURE.value,
        num_classes=image_data.NUM_CLASSES[_DATASET.value],
        channels=tuple(int(c) for c in _CHANNELS.value),
        strides=tuple(int(s) for s in _STRIDES.value),
        batch_norm=_BATCH_NORM.value,
        learning_rate=_LEARNING_RATE.value,
        sg_learning_rate=_SG_LEARNING_RATE.value,
        gradient_weight=_GRADIENT_WEIGHT.value,
        warmup_steps=_WARMUP_STEPS.value,
      ),
      seed,
    )
    for variant in _VARIANTS.value
    for seed in range(_SEEDS.value)
  ]
  if chief:
    common.write_config(
      workdir,
      {
        "flags": {
          name: flags.FLAGS[name].value
          for name in (
            "dataset",
            "variants",
            "num_modules",
            "architecture",
            "seeds",
            "steps",
            "batch_size",
            "learning_rate",
            "sg_learning_rate",
            "gradient_weight",
            "warmup_steps",
            "channels",
            "strides",
            "batch_norm",
            "strategy",
            "deterministic",
          )
        },
        "replicas": strategy.num_replicas_in_sync,
      },
    )
  records = common.run_sweep(
    workdir,
    runs,
    lambda run, run_dir: run_one(run, run_dir, strategy, chief),
    chief,
    lambda record: f"test accuracy {100 * record['test_accuracy']:.1f}%",
  )
  if not chief:
    return
  table = markdown_table(records)
  with open(os.path.join(workdir, "table.md"), "w", encoding="utf-8") as f:
    f.write(table)
  print(table)
  print(
    f"Results: {workdir}/results.jsonl\nTable: {workdir}/table.md\n"
    f"TensorBoard: tensorboard --logdir={workdir}/runs"
  )


if __name__ == "__main__":
  app.run(main)
