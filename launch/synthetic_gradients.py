r"""Synthetic-gradient sweep (paper Sec. 4.3, Table 1).

Trains one decoupled classifier per (variant, seed) and writes to
`--workdir`:

* `config.json`: every flag;
* `results.jsonl`: one record per finished run (test accuracy, the mean
  cosine between synthetic and true gradients at each split on the test
  set, seconds);
* `table.md`: test accuracy mean ± std over seeds and the mean cosines, per
  variant;
* `runs/<run_id>/`: TensorBoard logs (`train/`: loss, accuracy, each SG
  module's loss `sg_loss_<k>` and the cosine `cosine_<k>` between its
  synthetic gradient and the true one; `eval/`: test accuracy and cosines;
  the run's settings for the HParams dashboard) and, while the run trains,
  its checkpoints.

Every flag is checked before anything trains. A sweep started again with
the same workdir skips finished runs and resumes an interrupted one from its
last checkpoint, at the same step and data position (`launch/loop.py`). Any
`--strategy` works, several workers included.

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
from typing import Any
from typing import Dict
from typing import List

from absl import flags
import numpy as np

from launch import common
from launch import loop
from sobolev_tf import config as config_lib
from sobolev_tf.tasks import image_data
from sobolev_tf.tasks import synthetic_gradients as sg

FLAGS = flags.FlagValues()
_DATASET = flags.DEFINE_enum(
  "dataset", "digits", list(image_data.DATASETS), "Data set.", flag_values=FLAGS
)
_VARIANTS = flags.DEFINE_list(
  "variants",
  list(sg.VARIANTS),
  f"Variants, among {list(sg.VARIANTS)}.",
  flag_values=FLAGS,
)
_NUM_MODULES = flags.DEFINE_integer(
  "num_modules",
  3,
  "Split points, each with an SG module.",
  lower_bound=1,
  flag_values=FLAGS,
)
_SEEDS = flags.DEFINE_integer(
  "seeds",
  3,
  "Seeds per variant: 0 .. seeds-1.",
  lower_bound=1,
  flag_values=FLAGS,
)
_STEPS = flags.DEFINE_integer(
  "steps", 3000, "Training steps per run.", lower_bound=1, flag_values=FLAGS
)
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 64, "Global batch size.", lower_bound=1, flag_values=FLAGS
)
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate",
  1e-3,
  "Adam step size of the classifier.",
  flag_values=FLAGS,
)
_SG_LEARNING_RATE = flags.DEFINE_float(
  "sg_learning_rate",
  1e-3,
  "Adam step size of the SG modules.",
  flag_values=FLAGS,
)
_GRADIENT_WEIGHT = flags.DEFINE_float(
  "gradient_weight",
  sg.Config.gradient_weight,
  "Weight of the SG modules' gradient terms (mean squared error over h); "
  "with --balance=target_scale, relative to the true gradients' scale.",
  lower_bound=0.0,
  flag_values=FLAGS,
)
_BALANCE = flags.DEFINE_enum(
  "balance",
  sg.Config.balance,
  list(config_lib.BALANCES),
  "Balance of the SG modules' value and gradient terms "
  "(SobolevConfig.balance); none with --gradient_weight=100 is the earlier "
  "setting.",
  flag_values=FLAGS,
)
_WARMUP_STEPS = flags.DEFINE_integer(
  "warmup_steps",
  0,
  "Steps the SG modules train before they are used.",
  lower_bound=0,
  flag_values=FLAGS,
)
_ARCHITECTURE = flags.DEFINE_enum(
  "architecture",
  "convnet",
  list(sg.ARCHITECTURES),
  "convnet (--channels, --strides) or resnet50 (ImageNet's ResNet-50).",
  flag_values=FLAGS,
)
_CHANNELS = flags.DEFINE_list(
  "channels",
  ["32", "32", "64"],
  "Channels of the conv blocks.",
  flag_values=FLAGS,
)
_STRIDES = flags.DEFINE_list(
  "strides", ["1", "1", "2"], "Their strides.", flag_values=FLAGS
)
_BATCH_NORM = flags.DEFINE_bool(
  "batch_norm",
  False,
  "Batch normalisation in the conv blocks.",
  flag_values=FLAGS,
)
_DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "tensorflow-datasets dir.", flag_values=FLAGS
)
_MANUAL_DIR = flags.DEFINE_string(
  "manual_dir",
  None,
  "Directory with the ImageNet tar files.",
  flag_values=FLAGS,
)
_COMMON = common.define_common_flags(FLAGS, steps_per_execution=100)

common.check_list_flag(
  FLAGS, "variants", lambda name: common.one_of(name, sg.VARIANTS)
)
common.check_list_flag(FLAGS, "channels", common.positive_int)
common.check_list_flag(FLAGS, "strides", common.positive_int)
common.check_flag(FLAGS, "learning_rate", common.positive_number)
common.check_flag(FLAGS, "sg_learning_rate", common.positive_number)


def _loader_kwargs() -> Dict[str, Any]:
  if _DATASET.value == "digits":
    return {}
  return {"data_dir": _DATA_DIR.value} | (
    {"manual_dir": _MANUAL_DIR.value}
    if _DATASET.value == "imagenet2012"
    else {}
  )


def sweep_tasks() -> List[sg.SyntheticGradientsTask]:
  """Every run of the sweep the flags describe, in order (checked)."""
  return [
    sg.SyntheticGradientsTask(
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
        balance=_BALANCE.value,
        warmup_steps=_WARMUP_STEPS.value,
      ),
      dataset=_DATASET.value,
      seed=seed,
      steps=_STEPS.value,
      batch_size=_BATCH_SIZE.value,
      loader_kwargs=_loader_kwargs(),
    )
    for variant in _VARIANTS.value
    for seed in range(_SEEDS.value)
  ]


def markdown_table(records: List[Dict[str, Any]]) -> str:
  """Test accuracy (mean ± std over seeds) and mean cosines per variant."""
  splits = sorted(
    {k for r in records for k in r if k.startswith("test_cosine_")}
  )
  header = ["variant", "test accuracy (%)"]
  header += [f"cosine at split {k.rsplit('_', 1)[1]}" for k in splits]
  header += ["seeds"]
  rows = []
  for variant in sg.VARIANTS:
    group = [r for r in records if r["variant"] == variant]
    if not group:
      continue
    row = [
      variant,
      common.mean_std_cell([100 * r["test_accuracy"] for r in group]),
    ]
    for key in splits:
      values = [r[key] for r in group if key in r]
      row.append(f"{np.mean(values):.2f}" if values else "–")
    rows.append([*row, len(group)])
  return common.markdown_table(header, rows)


def main(argv: List[str]) -> None:
  """Runs the sweep, then writes and prints the table."""
  del argv
  workdir = _COMMON["workdir"].value
  strategy = common.setup(_COMMON)
  chief = common.is_chief(strategy)
  tasks = sweep_tasks()
  if chief:
    common.write_config(workdir, FLAGS, replicas=strategy.num_replicas_in_sync)
  records = loop.run_sweep(
    workdir,
    strategy,
    tasks,
    loop.Settings(
      steps_per_execution=_COMMON["steps_per_execution"].value,
      checkpoints_per_run=_COMMON["checkpoints_per_run"].value,
    ),
    lambda record: f"test accuracy {100 * record['test_accuracy']:.1f}%",
  )
  if not chief:
    return
  table = markdown_table(records)
  common.write_file(os.path.join(workdir, "table.md"), table)
  print(table)
  print(
    f"Results: {workdir}/results.jsonl\nTable: {workdir}/table.md\n"
    f"TensorBoard: tensorboard --logdir={workdir}/runs"
  )


if __name__ == "__main__":
  common.run_main(main, FLAGS)
