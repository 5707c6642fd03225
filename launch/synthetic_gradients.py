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

    python -m launch.synthetic_gradients --workdir=workdir/sg_digits \
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
from launch import files
from launch import flag_checks
from sobolev_tf.tasks import image_data
from sobolev_tf.tasks import synthetic_gradients as sg
from sobolev_tf.tasks import synthetic_gradients_task as sg_task

FLAGS = flags.FlagValues()
_DATASET = flags.DEFINE_enum(
  "dataset", "digits", list(image_data.DATASETS), "Data set.", flag_values=FLAGS
)
_VARIANTS = common.define_choices_flag(
  FLAGS, "variants", sg.VARIANTS, sg.VARIANTS, "Variants"
)
# Name, default, least value and help.
_MODULES = common.define_integers(
  FLAGS,
  (
    ("num_modules", 3, 1, "Split points, each with an SG module."),
    ("warmup_steps", 0, 0, "Steps the SG modules train before they are used."),
  ),
)
_SWEEP = common.define_sweep_flags(
  FLAGS,
  steps=3000,
  batch_size=64,
  learning_rate_help="Adam step size of the classifier.",
)
_SG_LEARNING_RATE = flags.DEFINE_float(
  "sg_learning_rate",
  1e-3,
  "Adam step size of the SG modules.",
  flag_values=FLAGS,
)
_TERMS = common.define_balance_flags(
  FLAGS,
  "gradient_weight",
  "Weight of the SG modules' gradient terms (mean squared error over h); "
  "with --balance=target_scale, relative to the true gradients' scale.",
  terms="the SG modules' value and gradient terms",
  balance_note="none with --gradient_weight=100 is the earlier setting",
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
_EVAL_EVERY = common.define_eval_every_flag(FLAGS, 0)
_VALIDATION = common.define_validation_flag(
  FLAGS, 0.1, "a stratified share of the training images; their loss selects"
)
_COMMON = common.define_common_flags(FLAGS, steps_per_execution=100)

flag_checks.check_list_flag(FLAGS, "channels", flag_checks.positive_int)
flag_checks.check_list_flag(FLAGS, "strides", flag_checks.positive_int)
flag_checks.check_flag(FLAGS, "sg_learning_rate", flag_checks.positive_number)


def _loader_kwargs() -> Dict[str, Any]:
  if _DATASET.value == "digits":
    return {}
  return {"data_dir": _DATA_DIR.value} | (
    {"manual_dir": _MANUAL_DIR.value}
    if _DATASET.value == "imagenet2012"
    else {}
  )


def sweep_tasks() -> List[sg_task.SyntheticGradientsTask]:
  """Every run of the sweep the flags describe, in order (checked)."""
  return [
    sg_task.SyntheticGradientsTask(
      sg.Config(
        variant=variant,
        num_modules=_MODULES["num_modules"].value,
        architecture=_ARCHITECTURE.value,
        num_classes=image_data.NUM_CLASSES[_DATASET.value],
        channels=tuple(int(c) for c in _CHANNELS.value),
        strides=tuple(int(s) for s in _STRIDES.value),
        batch_norm=_BATCH_NORM.value,
        learning_rate=_SWEEP["learning_rate"].value,
        sg_learning_rate=_SG_LEARNING_RATE.value,
        gradient_weight=_TERMS["gradient_weight"].value,
        balance=_TERMS["balance"].value,
        balance_floor=_TERMS["balance_floor"].value,
        warmup_steps=_MODULES["warmup_steps"].value,
      ),
      dataset=_DATASET.value,
      seed=seed,
      steps=_SWEEP["steps"].value,
      batch_size=_SWEEP["batch_size"].value,
      loader_kwargs=_loader_kwargs(),
      validation_fraction=_VALIDATION.value,
    )
    for variant in _VARIANTS.value
    for seed in range(_SWEEP["seeds"].value)
  ]


def markdown_table(records: List[Dict[str, Any]]) -> str:
  """Test accuracy (mean ± std over seeds) and mean cosines per variant.

  With a validation split, the test accuracy of each run's best validation
  evaluation (the weights it ends with) stands beside the last step's.
  """
  splits = sorted(
    {k for r in records for k in r if k.startswith("test_cosine_")}
  )
  selected = any("best_test_accuracy" in r for r in records)
  header = ["variant", "test accuracy (%)"]
  header += ["best-validation test accuracy (%)"] * selected
  header += [f"cosine at split {k.rsplit('_', 1)[1]}" for k in splits]
  header += ["seeds"]
  rows = []
  for variant in sg.VARIANTS:
    group = [r for r in records if r["variant"] == variant]
    if not group:
      continue
    row = [
      variant,
      files.mean_std_cell([100 * r["test_accuracy"] for r in group]),
    ]
    if selected:
      row.append(
        files.mean_std_cell([100 * r["best_test_accuracy"] for r in group])
      )
    for key in splits:
      values = [r[key] for r in group if key in r]
      row.append(f"{np.mean(values):.2f}" if values else "–")
    rows.append([*row, len(group)])
  return files.markdown_table(header, rows)


def main(argv: List[str]) -> None:
  """Runs the sweep, then writes and prints the table."""
  del argv
  context = common.setup(_COMMON)
  tasks = sweep_tasks()
  context.write_config(FLAGS)
  records = context.run_sweep(
    tasks,
    lambda record: f"test accuracy {100 * record['test_accuracy']:.1f}%",
    eval_every=common.eval_every(
      _EVAL_EVERY.value, _SWEEP["steps"].value, _VALIDATION.value
    ),
  )
  if not context.chief:
    return
  workdir = context.workdir
  table = markdown_table(records)
  files.write_file(os.path.join(workdir, "table.md"), table)
  print(table)
  print(
    f"Results: {workdir}/results.jsonl\nTable: {workdir}/table.md\n"
    f"TensorBoard: tensorboard --logdir={workdir}/runs"
  )


if __name__ == "__main__":
  common.run_main(main, FLAGS)
