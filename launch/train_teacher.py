r"""Trains an Atari teacher with A2C (paper Sec. 4.2's teacher policies).

    python -m launch.train_teacher --workdir=/tmp/teacher_breakout \
      --game=breakout --frames=10000000

Writes to `--workdir`: TensorBoard logs (`tensorboard/`: episode return,
losses, entropy, frames per second), checkpoints (`checkpoints/`; a run
started again with the same flags resumes from the last one, counting
frames on; the environments start new episodes), and at the end
`teacher_<game>.npz` (the network's weights as float16, loadable with
`a2c.load_weights`, no pickles) and `evaluation.json` (the mean score over
`--eval_episodes` episodes of the teacher, sampling from its policy, and of
a uniformly random policy).
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from launch import common
from sobolev_tf.tasks import a2c

_GAME = flags.DEFINE_string(
  "game", "breakout", "ALE game: pong, breakout, space_invaders, ..."
)
_FRAMES = flags.DEFINE_integer("frames", 10_000_000, "Game frames to train.")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 16, "Environments.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of environments and actions.")
_EVAL_EPISODES = flags.DEFINE_integer(
  "eval_episodes", 10, "Episodes to evaluate the teacher and random play."
)
_LOG_EVERY = flags.DEFINE_integer("log_every", 100, "Updates between logs.")
_CHECKPOINT_EVERY = flags.DEFINE_integer(
  "checkpoint_every", 2000, "Updates between checkpoints."
)
_COMMON = common.define_common_flags()


def main(argv):
  """Trains, evaluates and exports the teacher."""
  del argv
  workdir = _COMMON["workdir"].value
  strategy = common.setup(_COMMON)
  common.require_one_replica(
    strategy,
    _COMMON["strategy"].value,
    "A2C steps its environments on this host and trains on one replica",
  )
  common.write_config(
    workdir,
    {
      name: flags.FLAGS[name].value
      for name in ("game", "frames", "num_envs", "seed", "strategy")
    },
  )
  env = a2c.make_atari_env(_GAME.value, _NUM_ENVS.value, seed=_SEED.value)
  num_actions = int(env.single_action_space.n)
  with strategy.scope():
    learner = a2c.A2CLearner(num_actions, a2c.Config(num_envs=_NUM_ENVS.value))
  checkpoint = tf.train.Checkpoint(
    network=learner.network, optimizer=learner.optimizer, frames=learner.frames
  )
  manager = tf.train.CheckpointManager(
    checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=2
  )
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_consumed()
    logging.info(
      "Resumed from %s at %d frames",
      manager.latest_checkpoint,
      int(learner.frames.numpy()),
    )
  writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def on_log(frames, logs):
    with writer.as_default(step=frames):
      for name, value in logs.items():
        tf.summary.scalar(name, value)
    logging.info(
      "%d frames: %s",
      frames,
      ", ".join(f"{k} {v:.4g}" for k, v in sorted(logs.items())),
    )

  a2c.train(
    learner,
    env,
    _FRAMES.value,
    seed=_SEED.value,
    on_log=on_log,
    on_checkpoint=lambda frames: manager.save(checkpoint_number=frames),
    log_every=_LOG_EVERY.value,
    checkpoint_every=_CHECKPOINT_EVERY.value,
  )
  writer.close()
  path = os.path.join(workdir, f"teacher_{_GAME.value}.npz")
  a2c.save_weights(learner.network, path)

  # Evaluate the exported (float16) weights, as a user would load them.
  teacher = a2c.load_teacher(path, num_actions)
  eval_seed = _SEED.value + 1
  scores = {
    "teacher": a2c.play(
      tf.function(teacher.policy_logits), env, _EVAL_EPISODES.value, eval_seed
    ),
    "random": a2c.play(None, env, _EVAL_EPISODES.value, eval_seed),
  }
  summary = {
    "game": _GAME.value,
    "frames": int(learner.frames.numpy()),
    **{f"{who}_mean": float(np.mean(values)) for who, values in scores.items()},
    **{f"{who}_std": float(np.std(values)) for who, values in scores.items()},
    "scores": scores,
    "weights": path,
    "weights_bytes": os.path.getsize(path),
  }
  with open(os.path.join(workdir, "evaluation.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps({k: v for k, v in summary.items() if k != "scores"}))


if __name__ == "__main__":
  app.run(main)
