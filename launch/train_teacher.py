r"""Trains an Atari teacher with A2C (paper Sec. 4.2's teacher policies).

    python -m launch.train_teacher --workdir=workdir/teacher_breakout \
      --game=breakout --frames=10000000

Writes to `--workdir` what every launcher writes (`launch/loop.py`):

* `config.json`: every flag;
* `results.jsonl`: the run's record: frames, the mean and std of the
  teacher's scores over `--eval_episodes` games (sampling from its policy,
  with the exported float16 weights) and of uniformly random play from the
  same starts, every score, and the weights' path;
* `table.md`: the same scores as a table;
* `runs/<game>-s<seed>/`: TensorBoard logs (`train/`: episode return,
  losses, entropy, frames, frames per second; `eval/`: the teacher's
  scores; the run's settings for the HParams dashboard), the exported
  weights `teacher_<game>.npz` (float16 `.npz`, loadable with
  `sobolev_tf.layers.atari.load_teacher`, no pickles) and, while it trains,
  its checkpoints (`--checkpoints_per_run` of them).

A run started again with the same flags resumes from its last checkpoint
and ends with the weights of a run never killed: the checkpoint holds every
action taken, and the environments (deterministic given their seed and the
actions) are brought back to where they were by replaying them.

A2C steps its environments on this host and trains on one replica:
`--strategy=default` or `one_device` (a GPU with `--num_gpus=1`); a
strategy with several replicas is refused before anything trains.
"""

import json
import os
from typing import List

from absl import flags

from launch import common
from launch import files
from launch import flag_checks
from sobolev_tf.tasks import a2c
from sobolev_tf.tasks import a2c_task
from sobolev_tf.tasks import atari_env

FLAGS = flags.FlagValues()
_GAME = flags.DEFINE_string(
  "game",
  "breakout",
  "ALE game: pong, breakout, space_invaders, ...",
  flag_values=FLAGS,
)
# Name, default, least value and help.
_RUN = common.define_integers(
  FLAGS,
  (
    ("frames", 10_000_000, 1, "Game frames to train."),
    ("num_envs", 16, 1, "Environments."),
    ("seed", 0, 0, "Seed of the initial weights, environments and actions."),
    ("eval_episodes", 10, 1, "Games played by the teacher and by random play."),
  ),
)
_COMMON = common.define_common_flags(
  FLAGS, steps_per_execution=100, checkpoints_per_run=16
)

flag_checks.check_flag(FLAGS, "game", atari_env.check_game)


def main(argv: List[str]) -> None:
  """Trains, evaluates and exports the teacher."""
  del argv
  context = common.setup(_COMMON)
  task = a2c_task.TeacherTask(
    _GAME.value,
    _RUN["frames"].value,
    a2c.Config(num_envs=_RUN["num_envs"].value),
    seed=_RUN["seed"].value,
    eval_episodes=_RUN["eval_episodes"].value,
  )
  task.check_strategy(context.strategy)
  context.write_config(FLAGS)
  (record,) = context.run_sweep(
    [task],
    lambda r: (
      f"teacher {r['teacher_mean']:.1f} ± {r['teacher_std']:.1f}, "
      f"random {r['random_mean']:.1f} ± {r['random_std']:.1f}"
    ),
  )
  table = files.markdown_table(
    ["game", "frames", "teacher score", "random score", "games"],
    [
      [
        record["game"],
        record["frames"],
        files.mean_std_cell(record["scores"]["teacher"]),
        files.mean_std_cell(record["scores"]["random"]),
        len(record["scores"]["teacher"]),
      ]
    ],
  )
  files.write_file(os.path.join(context.workdir, "table.md"), table)
  print(table)
  print(json.dumps({k: v for k, v in record.items() if k != "scores"}))


if __name__ == "__main__":
  common.run_main(main, FLAGS)
