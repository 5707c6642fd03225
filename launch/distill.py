r"""Atari policy distillation, regular against Sobolev (paper Sec. 4.2, Fig. 4).

    python -m launch.distill --workdir=/tmp/distill_breakout --game=breakout \
      --teacher=teachers/breakout.npz --num_states=10000

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
5. Writes `results.jsonl`, `table.md` (final test error, KL and game score,
   mean ± std over seeds, with the teacher's and random play's scores),
   `figure4.png` (learning curves, one column per fraction) and per-run
   TensorBoard logs.

Started again with the same workdir, it keeps the recording and the
finished runs and redoes only the run that was interrupted (runs are short;
they are not checkpointed inside).
"""

import json
import os
import time
from typing import Any
from typing import Dict
from typing import List

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from launch import common  # noqa: E402
from sobolev_tf.layers import atari  # noqa: E402
from sobolev_tf.tasks import a2c  # noqa: E402
from sobolev_tf.tasks import distillation  # noqa: E402

_GAME = flags.DEFINE_string("game", "breakout", "ALE game of the teacher.")
_TEACHER = flags.DEFINE_string(
  "teacher",
  None,
  "Teacher weights (.npz from launch.train_teacher).",
  required=True,
)
_NUM_STATES = flags.DEFINE_integer(
  "num_states", 10_000, "States to record (the paper recorded 100,000)."
)
_NUM_ENVS = flags.DEFINE_integer("num_envs", 16, "Environments to record.")
_TEST_FRACTION = flags.DEFINE_float(
  "test_fraction", 0.2, "Share of the episodes held out for testing."
)
_FRACTIONS = flags.DEFINE_list(
  "fractions", ["0.01", "0.1", "0.5", "1.0"], "Training fractions."
)
_METHODS = flags.DEFINE_list("methods", ["regular", "sobolev"], "Methods.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per cell.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps per run.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam step size.")
_DERIVATIVE_WEIGHT = flags.DEFINE_float(
  "derivative_weight",
  1e6,
  "Weight of the Sobolev term. Its mean squared error averages 28,224 input "
  "coordinates of gradients with respect to 0-255 pixel values, so it is "
  "tiny: 5e-8 to 5e-7 with the shipped teachers, against a KL of 0.01 to "
  "0.4, hence 1e6 to make the two terms comparable. Breakout's low-data "
  "advantage needed 1e7 (docs/RESULTS.md).",
)
_EVAL_EVERY = flags.DEFINE_integer(
  "eval_every", 200, "Steps between test evaluations."
)
_PLAY_EPISODES = flags.DEFINE_integer(
  "play_episodes",
  10,
  "Episodes each student, the teacher and random play (0: no play).",
)
_COMMON = common.define_common_flags()

_PLAY_SEED = 1  # Seed of the played games' starts, shared by every player.

_METHOD_WEIGHTS = {"regular": 0.0, "sobolev": None}


class RunConfig:
  """One distillation run."""

  def __init__(self, fraction: float, method: str, seed: int):
    if method not in _METHOD_WEIGHTS:
      raise ValueError(
        f"Received an invalid value for `methods`, expected among "
        f"{list(_METHOD_WEIGHTS)}. Received: {method!r}"
      )
    self.fraction, self.method, self.seed = fraction, method, seed
    self.run_id = f"{_GAME.value}-f{fraction:g}-{method}-s{seed}"


def recording(workdir: str, teacher: atari.AtariTeacher) -> Dict[str, Any]:
  """The recorded states, made once and kept in the workdir."""
  path = os.path.join(workdir, "recording.npz")
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as saved:
      return {key: saved[key] for key in saved.files}
  env = a2c.make_atari_env(_GAME.value, _NUM_ENVS.value, seed=0)
  logits_fn = tf.function(teacher.policy_logits)
  data = distillation.record(
    lambda frames: logits_fn(frames).numpy(), env, _NUM_STATES.value
  )
  env.close()
  temporary = path + ".tmp.npz"
  np.savez_compressed(temporary, **data)
  os.replace(temporary, path)
  return data


def play(logits_fn) -> List[float]:
  """Scores of `--play_episodes` games of `a2c.play(logits_fn, ...)`."""
  # One environment per episode: each plays one whole game.
  env = a2c.make_atari_env(_GAME.value, _PLAY_EPISODES.value, seed=_PLAY_SEED)
  scores = a2c.play(logits_fn, env, _PLAY_EPISODES.value, _PLAY_SEED)
  env.close()
  return scores


def play_reference(
  workdir: str, teacher: atari.AtariTeacher
) -> Dict[str, List[float]]:
  """The teacher's and random play's scores, measured once per workdir."""
  path = os.path.join(workdir, "play_reference.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  reference = {
    "teacher": play(tf.function(teacher.policy_logits)),
    "random": play(None),
  }
  with open(path, "w", encoding="utf-8") as f:
    json.dump(reference, f)
  return reference


def run_one(
  run: RunConfig,
  run_dir: str,
  teacher: atari.AtariTeacher,
  data: Dict[str, np.ndarray],
  split: tuple,
) -> Dict[str, Any]:
  """Trains one student; returns its record with the learning curve."""
  train, test = split
  rng = np.random.default_rng(run.seed)
  count = max(_BATCH_SIZE.value, round(run.fraction * len(train)))
  chosen = rng.choice(train, min(count, len(train)), replace=False)
  weight = _METHOD_WEIGHTS[run.method]
  distiller = distillation.Distiller(
    distillation.Config(
      num_actions=data["logits"].shape[-1],
      derivative_weight=_DERIVATIVE_WEIGHT.value if weight is None else weight,
      learning_rate=_LEARNING_RATE.value,
    ),
    teacher,
    seed=run.seed,
  )
  step = tf.function(distiller.train_step)
  student_logits = tf.function(distiller.student)
  test_frames, test_logits = data["frames"][test], data["logits"][test]
  writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))

  def evaluate():
    predictions = np.concatenate(
      [
        student_logits(test_frames[i : i + 256]).numpy()
        for i in range(0, len(test_frames), 256)
      ]
    )
    return distillation.policy_metrics(predictions, test_logits)

  curve = []
  start = time.perf_counter()
  for index in range(_STEPS.value):
    batch = rng.choice(chosen, _BATCH_SIZE.value)
    logs = step(tf.constant(data["frames"][batch]))
    if (index + 1) % _EVAL_EVERY.value == 0 or index + 1 == _STEPS.value:
      metrics = evaluate()
      curve.append({"step": index + 1, **metrics})
      with writer.as_default(step=index + 1):
        for name, value in {**logs, **metrics}.items():
          tf.summary.scalar(name, float(value))
  writer.close()
  train_seconds = time.perf_counter() - start
  scores = play(student_logits) if _PLAY_EPISODES.value else []
  return {
    "run_id": run.run_id,
    "game": _GAME.value,
    "fraction": run.fraction,
    "train_states": int(len(chosen)),
    "method": run.method,
    "seed": run.seed,
    **curve[-1],
    "curve": curve,
    "train_seconds": round(train_seconds, 2),
    "scores": scores,
  }


def _score(scores: List[float]) -> str:
  if not scores:
    return "–"
  mean, std = common.mean_and_std(scores)
  return f"{mean:.1f} ± {std:.1f}"


def markdown_table(
  records: List[Dict[str, Any]], reference: Dict[str, List[float]]
) -> str:
  """Final test action error, KL and game score, mean ± std over seeds.

  A cell's game score is the mean ± std over seeds of each student's mean
  score; the teacher's and random play's are over their episodes.
  """
  lines = [
    "| fraction | states | method | test action error (%) | test KL | "
    "game score | seeds |",
    "|---|---|---|---|---|---|---|",
  ]
  for fraction in sorted({r["fraction"] for r in records}):
    for method in _METHOD_WEIGHTS:
      group = [
        r
        for r in records
        if r["fraction"] == fraction and r["method"] == method
      ]
      if not group:
        continue
      error = common.mean_and_std([100 * r["action_error"] for r in group])
      kl = common.mean_and_std([r["kl"] for r in group])
      score = _score([np.mean(r["scores"]) for r in group if r["scores"]])
      lines.append(
        f"| {fraction:g} | {group[0]['train_states']} | {method} | "
        f"{error[0]:.1f} ± {error[1]:.1f} | {kl[0]:.3f} ± {kl[1]:.3f} | "
        f"{score} | {len(group)} |"
      )
  for who, scores in reference.items():
    lines.append(f"| | | {who} | | | {_score(scores)} | |")
  return "\n".join(lines) + "\n"


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
  figure.savefig(path, dpi=80)
  plt.close(figure)


def main(argv):
  """Records, distils every cell, writes the table and Figure 4."""
  del argv
  workdir = _COMMON["workdir"].value
  strategy = common.setup(_COMMON)
  common.require_one_replica(
    strategy, _COMMON["strategy"].value, "distillation runs on one replica"
  )
  tf.io.gfile.makedirs(workdir)
  common.write_config(
    workdir,
    {
      name: flags.FLAGS[name].value
      for name in (
        "game",
        "teacher",
        "num_states",
        "test_fraction",
        "fractions",
        "methods",
        "seeds",
        "steps",
        "batch_size",
        "learning_rate",
        "derivative_weight",
        "play_episodes",
      )
    },
  )
  env = a2c.make_atari_env(_GAME.value, 1)
  num_actions = int(env.single_action_space.n)
  env.close()
  teacher = a2c.load_teacher(_TEACHER.value, num_actions)
  data = recording(workdir, teacher)
  reference = play_reference(workdir, teacher) if _PLAY_EPISODES.value else {}
  split = distillation.split_by_episode(
    data["episodes"], _TEST_FRACTION.value, seed=0
  )
  runs = [
    RunConfig(float(fraction), method, seed)
    for fraction in _FRACTIONS.value
    for method in _METHODS.value
    for seed in range(_SEEDS.value)
  ]
  records = common.run_sweep(
    workdir,
    runs,
    lambda run, run_dir: run_one(run, run_dir, teacher, data, split),
    True,
    lambda r: (
      f"test action error {100 * r['action_error']:.1f}%, KL {r['kl']:.3f}, "
      f"game score {_score(r['scores'])}"
    ),
  )
  table = markdown_table(records, reference)
  with open(os.path.join(workdir, "table.md"), "w", encoding="utf-8") as f:
    f.write(table)
  figure4(records, os.path.join(workdir, "figure4.png"))
  print(table)
  print(f"Figure: {workdir}/figure4.png\nResults: {workdir}/results.jsonl")


if __name__ == "__main__":
  app.run(main)
