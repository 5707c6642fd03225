"""What every launcher shares: its flags, the strategy, the sweep.

A launcher defines its flags on its own `FLAGS = flags.FlagValues()` (so
that several launchers can be imported into one process, as the tests do),
adds `define_common_flags(FLAGS)` and the shared flags it takes
(`define_sweep_flags`, `define_balance_flags`, `define_choices_flag`,
`define_eval_every_flag`; its own integer flags through `define_integers`),
checks the rest with `launch.flag_checks`, and ends with
`run_main(main, FLAGS)`. Its
`main` calls `setup` (devices and strategy), whose `LaunchContext` writes
the config (every flag, to `<workdir>/config.json`) and runs the sweep
(`launch.loop.run_sweep`, which keeps finished runs in a
`files.ResultStore`).
"""

import dataclasses
import os
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Sequence
from typing import Tuple

from absl import app
from absl import flags
import keras
import tensorflow as tf

from launch import files
from launch import flag_checks
from launch import loop
from launch import strategies
from sobolev_tf import config as config_lib
from sobolev_tf import distribute_utils
from sobolev_tf import execution
from sobolev_tf.tasks import base

# A table of integer flags: the name, default, least value and help of each.
IntegerSpecs = Sequence[Tuple[str, int, int, str]]


def define_integers(
  flag_values: flags.FlagValues, specs: IntegerSpecs
) -> Dict[str, flags.FlagHolder]:
  """Defines one integer flag per row of `specs`, on `flag_values`.

  Args:
    flag_values: the launcher's `FLAGS`.
    specs: `(name, default, lower_bound, help)` of each flag.

  Returns:
    The flag holders, keyed by flag name.
  """
  return {
    name: flags.DEFINE_integer(
      name, default, help_text, lower_bound=lower_bound, flag_values=flag_values
    )
    for name, default, lower_bound, help_text in specs
  }


def define_common_flags(
  flag_values: flags.FlagValues,
  steps_per_execution: int = 50,
  checkpoints_per_run: int = 4,
) -> Dict[str, flags.FlagHolder]:
  """Defines the flags every launcher takes, on `flag_values`.

  Where it runs: `--workdir`, `--strategy`, `--num_gpus`, `--tpu`,
  `--cpu_devices`, `--deterministic`. How the loop trains:
  `--steps_per_execution`, `--checkpoints_per_run`, `--checkpoint_secs`.

  Args:
    flag_values: the launcher's `FLAGS`.
    steps_per_execution: the launcher's default for that flag.
    checkpoints_per_run: the launcher's default for that flag.

  Returns:
    The flag holders, keyed by flag name.
  """
  return {
    **_define_placement_flags(flag_values),
    **define_integers(
      flag_values,
      (
        ("num_gpus", 0, 0, "GPUs for one_device/mirrored; 0 uses the CPU(s)."),
        (
          "cpu_devices",
          0,
          0,
          "Split the CPU into this many logical devices, so that "
          "--strategy=mirrored has several replicas without GPUs; 0 keeps "
          "one.",
        ),
        (
          "steps_per_execution",
          steps_per_execution,
          1,
          "Training steps per execution (Keras's name): per tf.function call "
          "for tf.data tasks; logs and TensorBoard points come after each.",
        ),
        (
          "checkpoints_per_run",
          checkpoints_per_run,
          1,
          "Checkpoints written over each run (evenly spaced, the last at its "
          "end); a killed run resumes from the latest.",
        ),
      ),
    ),
    "checkpoint_secs": flags.DEFINE_float(
      "checkpoint_secs",
      30.0,
      "Least seconds between a run's checkpoints (and from its start to "
      "its first): one due sooner is skipped, so a killed run redoes at "
      "most this much; 0 writes all of --checkpoints_per_run. Ignored in a "
      "cluster, whose workers save together.",
      lower_bound=0.0,
      flag_values=flag_values,
    ),
  }


def _define_placement_flags(
  flag_values: flags.FlagValues,
) -> Dict[str, flags.FlagHolder]:
  """`--workdir` and where it runs: strategy, TPU, determinism."""
  define = dict(flag_values=flag_values)
  return {
    "workdir": flags.DEFINE_string(
      "workdir",
      None,
      "Directory (any tf.io.gfile path: local, gs://...) for the config, "
      "results, tables, figures and runs; a sweep started again in the same "
      "workdir resumes.",
      required=True,
      **define,
    ),
    "strategy": flags.DEFINE_enum(
      "strategy",
      "default",
      strategies.STRATEGIES,
      "tf.distribute strategy.",
      **define,
    ),
    "tpu": flags.DEFINE_string(
      "tpu", "", "TPU name or address for --strategy=tpu.", **define
    ),
    "deterministic": flags.DEFINE_bool(
      "deterministic",
      False,
      "Enable TensorFlow's op determinism, run one op at a time (some steps, "
      "the synthetic-gradient one among them, otherwise round differently "
      "from run to run as concurrent ops race) and seed Python, NumPy and "
      "TensorFlow: the same flags give bit-identical results.",
      **define,
    ),
  }


def define_sweep_flags(
  flag_values: flags.FlagValues,
  steps: int,
  batch_size: int,
  learning_rate_help: str,
) -> Dict[str, flags.FlagHolder]:
  """Defines the flags of a sweep of runs over seeds, on `flag_values`.

  `--seeds` (3 by default), `--steps`, `--batch_size` (all at least 1) and
  `--learning_rate` (1e-3 by default, checked positive).

  Args:
    flag_values: the launcher's `FLAGS`.
    steps: the launcher's default training steps per run.
    batch_size: its default global batch size.
    learning_rate_help: what its learning rate is the step size of.

  Returns:
    The flag holders, keyed by flag name.
  """
  holders = define_integers(
    flag_values,
    (
      ("seeds", 3, 1, "Seeds per cell of the sweep: 0 .. seeds - 1."),
      ("steps", steps, 1, "Training steps per run."),
      ("batch_size", batch_size, 1, "Global batch size."),
    ),
  )
  holders["learning_rate"] = flags.DEFINE_float(
    "learning_rate", 1e-3, learning_rate_help, flag_values=flag_values
  )
  flag_checks.check_flag(
    flag_values, "learning_rate", flag_checks.positive_number
  )
  return holders


def define_balance_flags(
  flag_values: flags.FlagValues,
  weight_name: str,
  weight_help: str,
  terms: str,
  balance_note: str = "",
) -> Dict[str, flags.FlagHolder]:
  """Defines the derivative terms' weight and `--balance`, on `flag_values`.

  The weight is 1 by default and at least 0; `--balance` is one of
  `SobolevConfig`'s balances, `target_scale` by default: every task's
  objective is balanced by default.

  Args:
    flag_values: the launcher's `FLAGS`.
    weight_name: the weight's flag, e.g. `derivative_weight`.
    weight_help: its help.
    terms: the terms balanced, e.g. `"the KL and the Sobolev term"`.
    balance_note: a clause added to `--balance`'s help, e.g. what `none`
      was.

  Returns:
    The flag holders, keyed by flag name.
  """
  note = f"; {balance_note}" if balance_note else ""
  return {
    weight_name: flags.DEFINE_float(
      weight_name,
      1.0,
      weight_help,
      lower_bound=0.0,
      flag_values=flag_values,
    ),
    "balance": flags.DEFINE_enum(
      "balance",
      "target_scale",
      list(config_lib.BALANCES),
      f"Balance between {terms} (SobolevConfig.balance){note}.",
      flag_values=flag_values,
    ),
    "balance_floor": flags.DEFINE_float(
      "balance_floor",
      config_lib.SobolevConfig.balance_floor,
      "With --balance=target_scale, the least scale of a derivative term, "
      "as a fraction of the value's spread over the input's "
      "(SobolevConfig.balance_floor); 0 for none.",
      lower_bound=0.0,
      flag_values=flag_values,
    ),
  }


def define_choices_flag(
  flag_values: flags.FlagValues,
  name: str,
  default: Sequence[str],
  choices: Sequence[str],
  what: str,
) -> flags.FlagHolder:
  """Defines a list flag of `choices`, checked to be among them and not empty.

  Args:
    flag_values: the launcher's `FLAGS`.
    name: the flag.
    default: its default values.
    choices: the values it may hold.
    what: what the values are, e.g. `"Methods"`: the help starts with it.

  Returns:
    The flag holder.
  """
  holder = flags.DEFINE_list(
    name,
    list(default),
    f"{what}, among {list(choices)}.",
    flag_values=flag_values,
  )
  flag_checks.check_list_flag(
    flag_values, name, lambda value: flag_checks.one_of(value, choices)
  )
  return holder


def define_eval_every_flag(
  flag_values: flags.FlagValues, default: int
) -> flags.FlagHolder:
  """Defines `--eval_every` (at least 0) with the launcher's `default`."""
  return flags.DEFINE_integer(
    "eval_every",
    default,
    "Steps between evaluations (the points of each record's learning curve "
    "and of TensorBoard's eval/ scalars, and where a validation split "
    f"selects the best weights); 0: {EVALUATIONS_PER_RUN} per run with a "
    "validation split, else at the end only.",
    lower_bound=0,
    flag_values=flag_values,
  )


# Evaluations per run when a validation split selects the weights and
# `--eval_every` is 0.
EVALUATIONS_PER_RUN = 20


def eval_every(flag_value: int, steps: int, validation_fraction: float) -> int:
  """The loop's `eval_every`: the flag's, or the default of a validated run.

  Args:
    flag_value: `--eval_every`.
    steps: the runs' steps.
    validation_fraction: `--validation_fraction`.

  Returns:
    `flag_value` if set; else `steps / EVALUATIONS_PER_RUN` (at least 1)
    with a validation split, 0 without.
  """
  if flag_value or not validation_fraction:
    return flag_value
  return max(1, steps // EVALUATIONS_PER_RUN)


def define_validation_flag(
  flag_values: flags.FlagValues, default: float, what: str
) -> flags.FlagHolder:
  """Defines `--validation_fraction`, in [0, 1), on `flag_values`.

  Args:
    flag_values: the launcher's `FLAGS`.
    default: the launcher's default.
    what: what is held out and what selects, for the help.

  Returns:
    The flag holder.
  """
  holder = flags.DEFINE_float(
    "validation_fraction",
    default,
    f"Share of the training data held out for validation ({what}): each "
    "run ends with the weights of its best validation evaluation and "
    "records their test metrics (best_*) beside the last ones. 0: no "
    "split, the last weights.",
    flag_values=flag_values,
  )
  flag_checks.check_flag(
    flag_values, "validation_fraction", flag_checks.fraction_or_zero
  )
  return holder


MOST_CONCURRENT_RUNS = 4


def resolve_jit_compile(flag_value: str, strategy: tf.distribute.Strategy):
  """`--jit_compile=auto|true|false` as a bool; `auto` is XLA on one replica.

  XLA pays most for the small steps of a sweep on one device (and fuses an
  execution's steps into one program there); under `MirroredStrategy` on
  logical CPUs it fails in TensorFlow (see the README's known limits).
  """
  if flag_value == "auto":
    return strategy.num_replicas_in_sync == 1
  return flag_value == "true"


def resolve_concurrent_runs(
  flag_value: str, strategy: tf.distribute.Strategy, deterministic: bool
) -> int:
  """`--concurrent_runs=auto|N` as `loop.Settings.concurrent_runs`.

  `auto` trains one run more than the CPU has cores, up to
  `MOST_CONCURRENT_RUNS`, where that pays: on a host without accelerators,
  under a strategy of one replica outside a cluster, and without
  `--deterministic` (which runs one op at a time). Two runs at once gave
  1.5-1.7 times the steps per second of one on a 2-core CPU (small
  regression steps); a third keeps both cores stepping while a run builds,
  evaluates or writes in Python (the quick sweep: 44 s against 50 s with
  two; four, 44 s). An accelerator: one run at a time until measured.
  """
  if flag_value != "auto":
    return flag_checks.positive_int(flag_value)
  if (
    deterministic
    or not execution.on_cpu_only()
    or strategies.is_distributed(strategy)
  ):
    return 1
  return min(len(os.sched_getaffinity(0)) + 1, MOST_CONCURRENT_RUNS)


def resolve_fuse_steps(flag_value: str):
  """`--fuse_steps=auto|true|false` as `loop.Settings.fuse_steps` takes it."""
  return {"auto": "auto", "true": True, "false": False}[flag_value]


def run_main(main: Callable[[List[str]], Any], flag_values: flags.FlagValues):
  """`absl.app.run(main)` with the launcher's own flags.

  Args:
    main: the launcher's `main(argv)`.
    flag_values: the launcher's `FLAGS`, parsed with absl's own flags.
  """
  flags.FLAGS.append_flag_values(flag_values)

  def parsed_main(argv: List[str]) -> Any:
    flag_values.mark_as_parsed()
    return main(argv)

  app.run(parsed_main)


@dataclasses.dataclass(frozen=True)
class LaunchContext:
  """Where a launcher runs, as `setup` made it from the common flags.

  Attributes:
    workdir: `--workdir`.
    strategy: the strategy of `--strategy`.
    chief: whether this task writes the config, results and summaries.
    settings: the loop's settings of `--steps_per_execution`,
      `--checkpoints_per_run` and `--checkpoint_secs`.
  """

  workdir: str
  strategy: tf.distribute.Strategy
  chief: bool
  settings: loop.Settings

  def write_config(self, flag_values: flags.FlagValues, **extra: Any) -> None:
    """The chief's `files.write_config`, with the number of replicas.

    Args:
      flag_values: the launcher's `FLAGS`.
      **extra: further entries.
    """
    if self.chief:
      files.write_config(
        self.workdir,
        flag_values,
        **extra,
        replicas=self.strategy.num_replicas_in_sync,
      )

  def run_sweep(
    self,
    tasks: Sequence[base.Task],
    describe: Callable[[Dict[str, Any]], str],
    **settings: Any,
  ) -> List[Dict[str, Any]]:
    """`loop.run_sweep` of `tasks` in the workdir.

    Args:
      tasks: the runs, in order.
      describe: a record to the few words logged about it.
      **settings: the launcher's own `loop.Settings` fields, e.g.
        `eval_every`.

    Returns:
      The records of `tasks`.
    """
    return loop.run_sweep(
      self.workdir,
      self.strategy,
      tasks,
      dataclasses.replace(self.settings, **settings),
      describe,
    )


def setup(holders: Dict[str, flags.FlagHolder]) -> LaunchContext:
  """Applies `--deterministic` and `--cpu_devices`; makes the strategy.

  Call it first in `main`, before any TensorFlow op runs.

  Args:
    holders: what `define_common_flags` returned.

  Returns:
    The workdir, the strategy of `--strategy`, this task's role and the
    loop's settings.
  """
  if holders["deterministic"].value:
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
  if holders["cpu_devices"].value:
    distribute_utils.configure_logical_cpus(holders["cpu_devices"].value)
  strategy = strategies.make_strategy(
    holders["strategy"].value, holders["num_gpus"].value, holders["tpu"].value
  )
  return LaunchContext(
    workdir=holders["workdir"].value,
    strategy=strategy,
    chief=strategies.is_chief(strategy),
    settings=loop.Settings(
      steps_per_execution=holders["steps_per_execution"].value,
      checkpoints_per_run=holders["checkpoints_per_run"].value,
      checkpoint_secs=holders["checkpoint_secs"].value,
    ),
  )
