r"""Atari policy distillation, regular against Sobolev (paper Sec. 4.2, Fig. 4).

    python -m launch.distill --workdir=workdir/distill_breakout \
      --game=breakout --teacher=teachers/breakout.npz --num_states=10000

1. Records `--num_states` states by following the teacher (sampling from its
   policy) into `<workdir>/recording.npz` (uint8 frames, the teacher's
   logits, episode ids), once; a run started again reuses it.
2. Splits them by episode (`--test_fraction` of the episodes are held out).
3. For every training fraction, method and seed, trains a student on that
   fraction of the training states: `regular` (KL only) or `sobolev` (KL +
   the stochastic Sobolev term, `--derivative_weight`), and scores it every
   `--eval_every` steps on the test states: action prediction error and
   KL(teacher ‖ student).
4. Plays every trained student in the game for `--play_episodes` episodes
   (sampling from its policy), and the teacher and a uniformly random policy
   once, all from the same seeded starts (`play_reference.json`).
5. Writes `config.json` (every flag), `results.jsonl`, `table.md` (final
   test error, KL and game score, mean ± std over seeds, with the teacher's
   and random play's scores), `figure4.png` (learning curves, one column
   per fraction) and per-run TensorBoard logs (`train/`: the loss and its
   terms; `eval/`: test error and KL; the run's settings for the HParams
   dashboard).

Every flag, the game and the teacher's weights are checked before anything
is recorded or trained. Students train in `launch/loop.py`: batches of
their share of the states from a stateless shuffle keyed by seed and step,
checkpoints (`--checkpoints_per_run`), any `--strategy`. Started again with
the same workdir, a sweep keeps the recording and the finished runs and
resumes the interrupted one from its last checkpoint, ending with the
numbers of a run never interrupted.
"""

import io
import json
import os
import time
from typing import Any
from typing import Dict
from typing import List

from absl import flags
from absl import logging
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from launch import common  # noqa: E402
from launch import files  # noqa: E402
from launch import flag_checks  # noqa: E402
from launch import strategies  # noqa: E402
from sobolev_tf import checks  # noqa: E402
from sobolev_tf.layers import atari  # noqa: E402
from sobolev_tf.tasks import atari_env  # noqa: E402
from sobolev_tf.tasks import distillation  # noqa: E402
from sobolev_tf.tasks import distillation_task  # noqa: E402

FLAGS = flags.FlagValues()
_GAME = flags.DEFINE_string(
  "game", "breakout", "ALE game of the teacher.", flag_values=FLAGS
)
_TEACHER = flags.DEFINE_string(
  "teacher",
  None,
  "Teacher weights (.npz from launch.train_teacher).",
  required=True,
  flag_values=FLAGS,
)
# Name, default, least value and help.
_COUNTS = common.define_integers(
  FLAGS,
  (
    ("num_states", 10_000, 1, "States to record (the paper recorded 100,000)."),
    ("num_envs", 16, 1, "Environments to record."),
    (
      "play_episodes",
      10,
      0,
      "Episodes each student, the teacher and random play (0: no play).",
    ),
  ),
)
_TEST_FRACTION = flags.DEFINE_float(
  "test_fraction",
  0.2,
  "Share of the episodes held out for testing, in (0, 1).",
  flag_values=FLAGS,
)
_FRACTIONS = flags.DEFINE_list(
  "fractions",
  ["0.01", "0.1", "0.5", "1.0"],
  "Training fractions, each in (0, 1].",
  flag_values=FLAGS,
)
_METHODS = common.define_choices_flag(
  FLAGS, "methods", distillation.METHODS, distillation.METHODS, "Methods"
)
_SWEEP = common.define_sweep_flags(
  FLAGS, steps=2000, batch_size=32, learning_rate_help="Adam step size."
)
_TERMS = common.define_balance_flags(
  FLAGS,
  "derivative_weight",
  "Weight of the Sobolev term. With --balance=target_scale the term is the "
  "error relative to the teacher's gradients (with respect to 0-255 pixel "
  "values, their mean square is ~1e-7), so 1 weighs it like the KL for any "
  "teacher; with --balance=none it is in raw units (the earlier default, "
  "1e6, docs/RESULTS.md).",
  terms="the KL and the Sobolev term",
)
_EVAL_EVERY = common.define_eval_every_flag(FLAGS, 200)
_VALIDATION = common.define_validation_flag(
  FLAGS,
  0.1,
  "whole episodes of the training states; the student's KL to the "
  "teacher there selects the weights",
)
_COMMON = common.define_common_flags(FLAGS)

_PLAY_SEED = 1  # Seed of the played games' starts, shared by every player.
_RECORD_SEED = 0  # Seed of the recording's environments and actions.
_SPLIT_SEED = 0  # Seed of the choice of test episodes.


def _fraction(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = 0.0
  if not 0 < value <= 1:
    raise ValueError(f"expected numbers in (0, 1], got {text!r}")
  return value


def _teacher_file(path: str) -> str:
  if not tf.io.gfile.exists(path):
    raise ValueError(f"no such file: {path!r}")
  return path


flag_checks.check_flag(FLAGS, "game", atari_env.check_game)
flag_checks.check_flag(FLAGS, "teacher", _teacher_file)
flag_checks.check_list_flag(FLAGS, "fractions", _fraction)
flag_checks.check_flag(
  FLAGS,
  "test_fraction",
  lambda value: checks.fraction("test_fraction", value),
)


def recording(
  context: common.LaunchContext, teacher: atari.AtariTeacher
) -> Dict[str, np.ndarray]:
  """The recorded states, made once by the chief and kept in the workdir."""
  path = os.path.join(context.workdir, "recording.npz")
  if context.chief and not tf.io.gfile.exists(path):
    env = atari_env.make_atari_env(
      _GAME.value, _COUNTS["num_envs"].value, seed=_RECORD_SEED
    )
    logits_fn = tf.function(teacher.policy_logits)
    data = distillation.record(
      lambda frames: logits_fn(frames).numpy(),
      env,
      _COUNTS["num_states"].value,
      seed=_RECORD_SEED,
    )
    env.close()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **data)
    files.write_file(path, buffer.getvalue())
  strategies.barrier(context.strategy)  # The other workers read the chief's.
  with np.load(io.BytesIO(files.read_file(path)), allow_pickle=False) as saved:
    return {key: saved[key] for key in saved.files}


def play_reference(
  workdir: str, teacher: atari.AtariTeacher
) -> Dict[str, List[float]]:
  """The teacher's and random play's scores, measured once per workdir."""
  path = os.path.join(workdir, "play_reference.json")
  if tf.io.gfile.exists(path):
    return json.loads(files.read_file(path))
  reference = {
    who: distillation_task.play_scores(
      logits_fn, _GAME.value, _COUNTS["play_episodes"].value, _PLAY_SEED
    )
    for who, logits_fn in (
      ("teacher", tf.function(teacher.policy_logits)),
      ("random", None),
    )
  }
  files.write_file(path, json.dumps(reference))
  return reference


def sweep_configs() -> List[distillation_task.RunConfig]:
  """Every run of the sweep the flags describe, in order (checked)."""
  return [
    distillation_task.RunConfig(
      game=_GAME.value,
      fraction=float(fraction),
      method=method,
      seed=seed,
      steps=_SWEEP["steps"].value,
      batch_size=_SWEEP["batch_size"].value,
      learning_rate=_SWEEP["learning_rate"].value,
      derivative_weight=_TERMS["derivative_weight"].value,
      balance=_TERMS["balance"].value,
      balance_floor=_TERMS["balance_floor"].value,
      play_episodes=_COUNTS["play_episodes"].value,
      play_seed=_PLAY_SEED,
    )
    for fraction in _FRACTIONS.value
    for method in _METHODS.value
    for seed in range(_SWEEP["seeds"].value)
  ]


def markdown_table(
  records: List[Dict[str, Any]], reference: Dict[str, List[float]]
) -> str:
  """Final test action error, KL and game score, mean ± std over seeds.

  With a validation split the test action error and KL of each run's best
  validation evaluation (the weights it ends with, which play) stand beside
  those of its last step. A cell's game score is the mean ± std over seeds
  of each student's mean score; the teacher's and random play's are over
  their episodes.
  """
  selected = any("best_kl" in r for r in records)
  header = [
    "fraction",
    "states",
    "method",
    "test action error (%)",
    "test KL",
    *(["best-validation action error (%)", "best-validation KL"] * selected),
    "game score",
    "seeds",
  ]
  rows = []
  for fraction in sorted({r["fraction"] for r in records}):
    for method in distillation.METHODS:
      group = [
        r
        for r in records
        if r["fraction"] == fraction and r["method"] == method
      ]
      if not group:
        continue
      rows.append(
        [
          f"{fraction:g}",
          group[0]["train_states"],
          method,
          files.mean_std_cell([100 * r["action_error"] for r in group]),
          files.mean_std_cell([r["kl"] for r in group], digits=3),
          *(
            [
              files.mean_std_cell(
                [100 * r["best_action_error"] for r in group]
              ),
              files.mean_std_cell([r["best_kl"] for r in group], digits=3),
            ]
            * selected
          ),
          files.mean_std_cell(
            [np.mean(r["scores"]) for r in group if r["scores"]]
          ),
          len(group),
        ]
      )
  for who, scores in reference.items():
    blanks = [""] * (4 if selected else 2)
    rows.append(["", "", who, *blanks, files.mean_std_cell(scores), ""])
  return files.markdown_table(header, rows)


def figure4(records: List[Dict[str, Any]], path: str) -> None:
  """Test action error and KL against steps, one column per fraction."""
  fractions = sorted({r["fraction"] for r in records})
  figure, axes = plt.subplots(
    2, len(fractions), figsize=(3 * len(fractions), 5), squeeze=False
  )
  for column, fraction in enumerate(fractions):
    for method, color in (("regular", "tab:blue"), ("sobolev", "tab:orange")):
      group = [
        r
        for r in records
        if r["fraction"] == fraction and r["method"] == method
      ]
      if not group:
        continue
      steps = [point["step"] for point in group[0]["curve"]]
      for row, key in enumerate(("action_error", "kl")):
        values = np.array([[p[key] for p in r["curve"]] for r in group])
        axes[row][column].plot(steps, values.mean(0), color=color, label=method)
        axes[row][column].fill_between(
          steps, values.min(0), values.max(0), color=color, alpha=0.2
        )
    axes[0][column].set_title(f"{fraction:g} of the data")
  axes[0][0].set_ylabel("test action error")
  axes[1][0].set_ylabel("test KL")
  axes[0][-1].legend()
  for ax in axes[1]:
    ax.set_xlabel("steps")
  figure.tight_layout()
  files.save_figure(figure, path)
  plt.close(figure)


def main(argv: List[str]) -> None:
  """Records, distils every cell, writes the table and Figure 4."""
  del argv
  context = common.setup(_COMMON)
  configs = sweep_configs()
  teacher = atari.load_teacher(
    _TEACHER.value, atari_env.num_actions(_GAME.value)
  )
  context.write_config(FLAGS)
  start = time.perf_counter()
  data = recording(context, teacher)
  logging.info(
    "Recording: %d states in %.1fs",
    len(data["frames"]),
    time.perf_counter() - start,
  )
  train, test = distillation.split_by_episode(
    data["episodes"], _TEST_FRACTION.value, seed=_SPLIT_SEED
  )
  validation = np.zeros([0], np.int64)
  if _VALIDATION.value:
    kept, held = distillation.split_by_episode(
      data["episodes"][train], _VALIDATION.value, seed=_SPLIT_SEED + 1
    )
    train, validation = train[kept], train[held]
  states = distillation_task.Recording(
    frames=tf.convert_to_tensor(data["frames"]),
    logits=data["logits"],
    train=train,
    test=test,
    validation=validation,
  )
  tasks = [
    distillation_task.DistillationTask(config, _TEACHER.value, states)
    for config in configs
  ]
  records = context.run_sweep(
    tasks,
    lambda r: (
      f"test action error {100 * r['action_error']:.1f}%, KL {r['kl']:.3f}, "
      f"game score {files.mean_std_cell(r['scores'])}"
    ),
    eval_every=common.eval_every(
      _EVAL_EVERY.value, _SWEEP["steps"].value, _VALIDATION.value
    ),
  )
  if not context.chief:
    return
  workdir = context.workdir
  play = _COUNTS["play_episodes"].value
  start = time.perf_counter()
  reference = play_reference(workdir, teacher) if play else {}
  logging.info("Teacher's and random play: %.1fs", time.perf_counter() - start)
  table = markdown_table(records, reference)
  files.write_file(os.path.join(workdir, "table.md"), table)
  figure4(records, os.path.join(workdir, "figure4.png"))
  print(table)
  print(f"Figure: {workdir}/figure4.png\nResults: {workdir}/results.jsonl")


if __name__ == "__main__":
  common.run_main(main, FLAGS)
