r"""Training steps per second of `SobolevModel`, each beside the same JAX step.

    JAX_PLATFORMS=cpu python -m benchmarks.train_step_benchmark \
        --output=docs/benchmark.md
    python -m benchmarks.train_step_benchmark --quick --workloads=mlp_a

Every row is a workload (network and batch) and a step kind (`plain`: value
MSE only, `SobolevModel(net, order=0)`; `full_o1`, `stochastic_o1`,
`stochastic_o2`, `full_o2`: `SobolevModel(net, order=..., mode=...)` with one
projection). Both frameworks run the same step in the same process, so the
ratio TF/JAX (> 1: TF faster) is measured under the same machine load.

TensorFlow side: the real Keras training path. The model is compiled with
`jit_compile=True` and `steps_per_execution=N`; one timed repeat is one call
of `model.train_function(iterator)` on `iter(Dataset.from_tensors(batch)
.repeat())`, the call `fit` makes per execution, minus callbacks and progress
bar. It runs N `SobolevModel.train_step`s, each one XLA-compiled cluster,
inside a TF `while_loop` that pulls the next batch from the iterator: one
Python call per N steps, the least Python overhead that still goes through
Keras's `train_step`, metric trackers and optimizer. (`train_on_batch`
re-enters Python and the data adapter at every step.)

JAX side: the same network in `jax.numpy`, with its parameters copied from
the Keras network's initial weights; the same targets; the same loss (Keras's
`mean_squared_error` on `[B, D]`-flattened tensors, i.e. the mean over every
element, one term per order); Adam written as Keras writes it (epsilon 1e-7).
Stochastic derivatives draw one unit direction per example and step with
`jax.random` and use nested `jax.vjp`, as sobolev_tf does with nested tapes;
array targets are projected on the same directions. Full derivatives
(`--jax_full`) use, by default, `vmap(jacrev)` per example at order 1 and, at
order 2, sobolev_tf's own algorithm: one VJP of the batch per coordinate,
unrolled, reverse over reverse for MLP (a). On the 2-core machine it was
written on, that Hessian step took a third of the time of
`vmap(jacfwd(jacrev))`, while at order 1 `vmap(jacrev)` was as fast or faster
than the unrolled VJPs; `--jax_full=vmap` or `unrolled` forces one method.

The whole JAX step, Adam included, is one `jax.jit` program (parameters and
optimizer state donated), called from a Python loop: one compiled program per
step, as on the TF side (a `lax.scan` over steps would fuse steps, which Keras
cannot). Dispatch is asynchronous; each repeat ends with `block_until_ready`.

For the Atari convnet the Sobolev step distils a frozen teacher of the same
architecture (`SobolevModel(..., teacher=teacher)`), the paper's use case,
so its derivative targets are the teacher's projected input gradients,
computed at every step in both frameworks; its `plain` row fits random value
arrays, like the MLPs.

The `loss check` column compares the two frameworks' losses at the shared
initial weights (TF: the objective evaluated eagerly; JAX: the first step's)
where they do not depend on the random directions (plain and full rows, and
stochastic order 1 with a single output, where the direction is +-1); it
shows the relative difference, and `random` elsewhere.

`--quick` (3 steps, 2 repeats) is a smoke test, about half a minute per
workload, mostly compilation; its numbers are noise.

Measurement: a warm-up repeat per framework (compilation included, its time
is reported), then R timed repeats of N steps, alternating which framework
goes first, so that load from other processes falls on both alike. The table
gives the median steps/s of each, their ratio, the spread (max - min) /
median of the repeats, and per workload each step's time over the `plain`
step's time in the same framework.

Threads: both frameworks keep their defaults, which size TensorFlow's intra-
and inter-op pools and the XLA:CPU pool of JAX from the machine's CPUs, so
neither is favoured; the header records `nproc` and the TF settings. To
compare on one core, run the benchmark under `taskset -c 0`. JAX runs on the
CPU whatever `JAX_PLATFORMS` says.

Each new model traces a new `train_function`, so TensorFlow warns about
retracing after a few rows; no row retraces once warmed up.
"""

import dataclasses
import datetime
import functools
import gc
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import jaxlib
import keras
import numpy as np
import tensorflow as tf

import sobolev_tf
from sobolev_tf.objective import TARGET_KEYS

_WORKLOADS = flags.DEFINE_list(
  "workloads",
  ["mlp_a", "mlp_b", "atari"],
  "Workloads to run, among mlp_a, mlp_b and atari.",
)
_KINDS = flags.DEFINE_list(
  "kinds",
  [],
  "Step kinds to run, among plain, full_o1, stochastic_o1, stochastic_o2 "
  "and full_o2 (default: every kind a workload has).",
)
_STEPS = flags.DEFINE_integer(
  "steps", 50, "Training steps per timed repeat (Keras steps_per_execution)."
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 7, "Timed repeats per framework and row; the median is reported."
)
_OUTPUT = flags.DEFINE_string(
  "output", None, "Optional Markdown file to write the report to."
)
_QUICK = flags.DEFINE_bool(
  "quick",
  False,
  "Smoke test: 3 steps and 2 repeats, overriding --steps and --repeats.",
)
_JAX_FULL = flags.DEFINE_enum(
  "jax_full",
  "auto",
  ["auto", "vmap", "unrolled"],
  "How the JAX reference builds full derivatives: vmap, per example with "
  "jax.vmap(jax.jacrev) (order 1) and jax.vmap(jax.jacfwd(jax.jacrev)) "
  "(order 2); unrolled, one VJP (or JVP) of the batch per coordinate, the "
  "algorithm of sobolev_tf; auto, vmap at order 1 and unrolled at order 2, "
  "the faster of each on the 2-core CPU it was written on.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, data, directions.")

_QUICK_STEPS = 3
_QUICK_REPEATS = 2
_LEARNING_RATE = 1e-3
# Relative difference of the first losses above which the check says so.
_CHECK_TOLERANCE = 1e-4

# Layers, the last one being the output: ("dense", units),
# ("conv", filters, kernel_size, stride) or ("flatten",).
LayerSpec = Tuple[Any, ...]
Params = List[Tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class StepKind:
  """One kind of training step: Sobolev order, mode, hidden activation."""

  name: str
  order: int
  mode: str
  activation: str


@dataclasses.dataclass(frozen=True)
class Workload:
  """A network, a batch size and the step kinds measured on them."""

  name: str
  label: str
  batch_size: int
  input_shape: Tuple[int, ...]
  layers: Tuple[LayerSpec, ...]
  kinds: Tuple[str, ...]
  # Whether the Sobolev steps distil a teacher instead of fitting arrays.
  teacher: bool = False

  @property
  def num_outputs(self) -> int:
    """Width of the output layer."""
    return self.layers[-1][1]


KINDS = {
  kind.name: kind
  for kind in (
    StepKind("plain", 0, "full", "relu"),
    StepKind("full_o1", 1, "full", "relu"),
    StepKind("stochastic_o1", 1, "stochastic", "relu"),
    # Order 2 needs a smooth activation: ReLU networks have zero Hessians.
    StepKind("stochastic_o2", 2, "stochastic", "softplus"),
    StepKind("full_o2", 2, "full", "softplus"),
  )
}

_MLP_HIDDEN = (("dense", 256), ("dense", 256))

WORKLOADS = {
  workload.name: workload
  for workload in (
    Workload(
      "mlp_a",
      "MLP 2-256-256-1, B=128",
      128,
      (2,),
      _MLP_HIDDEN + (("dense", 1),),
      ("plain", "full_o1", "stochastic_o1", "stochastic_o2", "full_o2"),
    ),
    Workload(
      "mlp_b",
      "MLP 32-256-256-8, B=256",
      256,
      (32,),
      _MLP_HIDDEN + (("dense", 8),),
      ("plain", "full_o1", "stochastic_o1", "stochastic_o2"),
    ),
    Workload(
      "atari",
      "Atari convnet 84x84x4-6, B=64",
      64,
      (84, 84, 4),
      (
        ("conv", 32, 8, 4),
        ("conv", 64, 4, 2),
        ("conv", 64, 3, 1),
        ("flatten",),
        ("dense", 512),
        ("dense", 6),
      ),
      ("plain", "stochastic_o1"),
      teacher=True,
    ),
  )
}


def keras_net(workload: Workload, activation: str, seed: int) -> keras.Model:
  """The workload's network as a Keras `Sequential`, `[B, in...] -> [B, out]`.

  Args:
    workload: gives the input shape and the layers.
    activation: Keras name of the hidden activation.
    seed: seed of the (Glorot uniform) initialisation.

  Returns:
    A built Keras model.
  """
  keras.utils.set_random_seed(seed)
  layers = [keras.Input(workload.input_shape)]
  last = len(workload.layers) - 1
  for index, spec in enumerate(workload.layers):
    hidden_activation = None if index == last else activation
    if spec[0] == "dense":
      layers.append(keras.layers.Dense(spec[1], activation=hidden_activation))
    elif spec[0] == "conv":
      _, filters, kernel_size, stride = spec
      layers.append(
        keras.layers.Conv2D(
          filters, kernel_size, strides=stride, activation=hidden_activation
        )
      )
    else:
      layers.append(keras.layers.Flatten())
  return keras.Sequential(layers)


def jax_params(net: keras.Model) -> Params:
  """The `(kernel, bias)` pairs of a `keras_net` network, as JAX arrays."""
  weights = net.get_weights()
  return [
    (jnp.asarray(kernel), jnp.asarray(bias))
    for kernel, bias in zip(weights[::2], weights[1::2], strict=True)
  ]


_JAX_ACTIVATIONS = {"relu": jax.nn.relu, "softplus": jax.nn.softplus}


def jax_apply(
  workload: Workload, activation: str, params: Params, x: jax.Array
) -> jax.Array:
  """`keras_net` in `jax.numpy`: maps `x` `[B, in...]` to `[B, out]`."""
  hidden_activation = _JAX_ACTIVATIONS[activation]
  weights = iter(params)
  last = len(workload.layers) - 1
  h = x
  for index, spec in enumerate(workload.layers):
    if spec[0] == "flatten":
      h = h.reshape(h.shape[0], -1)  # [B, H * W * C], as Keras's Flatten.
      continue
    kernel, bias = next(weights)
    if spec[0] == "conv":
      stride = spec[3]
      h = (
        jax.lax.conv_general_dilated(
          h,
          kernel,
          window_strides=(stride, stride),
          padding="VALID",
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        + bias
      )
    else:
      h = h @ kernel + bias
    if index != last:
      h = hidden_activation(h)
  return h


def _mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(prediction - target))


def _unit_directions(key: jax.Array, shape: Sequence[int]) -> jax.Array:
  """One direction per example, uniform on the unit sphere of `shape[1:]`."""
  normal = jax.random.normal(key, shape)
  axes = tuple(range(1, len(shape)))
  return normal * jax.lax.rsqrt(
    jnp.sum(jnp.square(normal), axis=axes, keepdims=True)
  )


def _projected(
  fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  v1: jax.Array,
  v2: Optional[jax.Array],
) -> Tuple[jax.Array, jax.Array, Optional[jax.Array]]:
  """`fn(x)`, `D_x <fn(x), v1>` and `D_x <D_x <fn(x), v1>, v2>` (or None)."""

  def first(inputs):
    y, vjp = jax.vjp(fn, inputs)
    return vjp(v1)[0], y  # [B, in...], [B, out]

  if v2 is None:
    gradient, y = first(x)
    return y, gradient, None
  gradient, vjp_first, y = jax.vjp(first, x, has_aux=True)
  return y, gradient, vjp_first(v2)[0]


def _unrolled_jacobian(
  fn: Callable[[jax.Array], Tuple[jax.Array, Any]], x: jax.Array
) -> Tuple[jax.Array, jax.Array, Any]:
  """Per-example Jacobian of the batch function `fn`, as sobolev_tf builds it.

  One VJP of the whole batch per output coordinate, or one JVP per input
  coordinate when the input is smaller (`derivatives.choose_jacobian_mode`),
  in an unrolled loop; the examples being independent, each product gives
  one row (column) of every example's Jacobian.

  Args:
    fn: maps `x` `[B, in...]` to `(y, aux)` with `y` `[B, out...]`.
    x: the input batch.

  Returns:
    `(y, jacobian, aux)`, the Jacobian of shape `[B, out..., in...]`.
  """
  in_size = math.prod(x.shape[1:])
  y, vjp, aux = jax.vjp(fn, x, has_aux=True)
  out_size = math.prod(y.shape[1:])
  if out_size <= in_size:
    basis = jnp.eye(out_size, dtype=y.dtype)
    rows = [
      vjp(jnp.broadcast_to(basis[k].reshape(y.shape[1:]), y.shape))[0]
      for k in range(out_size)
    ]
    jacobian = jnp.stack(rows, axis=1)  # [B, out_size, in...]
  else:
    basis = jnp.eye(in_size, dtype=x.dtype)
    columns = [
      jax.jvp(
        fn,
        (x,),
        (jnp.broadcast_to(basis[i].reshape(x.shape[1:]), x.shape),),
        has_aux=True,
      )[1]
      for i in range(in_size)
    ]
    jacobian = jnp.stack(columns, axis=-1)  # [B, out..., in_size]
  return y, jacobian.reshape(y.shape + x.shape[1:]), aux


def _full_derivatives(
  fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  order: int,
  method: str,
) -> List[jax.Array]:
  """`[fn(x), D^1, ..., D^order]` for `x` `[B, in...]`, by `method`."""
  if method == "unrolled":

    def with_value(inputs):
      y = fn(inputs)
      return y, y

    y, d1, _ = _unrolled_jacobian(with_value, x)  # [B, out, in...]
    if order == 1:
      return [y, d1]

    def first(inputs):
      y, d1, _ = _unrolled_jacobian(with_value, inputs)
      return d1, (y, d1)

    # Reverse over reverse where sobolev_tf picks it, as for MLP (a).
    _, d2, (y, d1) = _unrolled_jacobian(first, x)  # [B, out, in..., in...]
    return [y, d1, d2]

  def single(example):  # [in...] -> [out], returned twice to keep the value.
    y = fn(example[None])[0]
    return y, y

  if order == 1:
    d1, y = jax.vmap(jax.jacrev(single, has_aux=True))(x)  # [B, out, in...]
    return [y, d1]

  def first_single(example):
    d1, y = jax.jacrev(single, has_aux=True)(example)  # [out, in...]
    return d1, (y, d1)

  # [B, out, in..., in...]
  d2, (y, d1) = jax.vmap(jax.jacfwd(first_single, has_aux=True))(x)
  return [y, d1, d2]


def full_method(order: int, method: str) -> str:
  """The JAX method of full derivatives of `order`: `vmap` or `unrolled`."""
  if method != "auto":
    return method
  return "vmap" if order == 1 else "unrolled"


def jax_loss(
  workload: Workload, kind: StepKind, teacher: bool, method: str = "auto"
) -> Callable[..., jax.Array]:
  """The step's loss `(params, x, aux, key) -> scalar` in JAX.

  Args:
    workload: the network.
    kind: the step kind.
    teacher: whether `aux` holds teacher parameters (`{"teacher": params}`)
      instead of array targets (`{"value": ..., "d1": ..., "d2": ...}`).
    method: how full derivatives are built, as `--jax_full`.

  Returns:
    The loss function, differentiable with respect to `params`.
  """
  apply = functools.partial(jax_apply, workload, kind.activation)

  def loss(params, x, aux, key):
    def model(inputs):
      return apply(params, inputs)

    if kind.order == 0:
      return _mse(model(x), aux["value"])
    if kind.mode == "full":
      predictions = _full_derivatives(
        model, x, kind.order, full_method(kind.order, method)
      )
      return sum(
        _mse(prediction, aux[key])
        for prediction, key in zip(predictions, TARGET_KEYS, strict=False)
      )
    key_out, key_in = jax.random.split(key)
    v1 = _unit_directions(key_out, (x.shape[0], workload.num_outputs))
    v2 = _unit_directions(key_in, x.shape) if kind.order == 2 else None
    y, first, second = _projected(model, x, v1, v2)
    if teacher:
      teacher_fn = functools.partial(apply, aux["teacher"])
      target = jax.lax.stop_gradient(_projected(teacher_fn, x, v1, v2))
      target_value, target_first, target_second = target
    else:
      target_value = aux["value"]
      target_first = jnp.einsum("bo,bo...->b...", v1, aux["d1"])
      target_second = None
      if v2 is not None:
        target_second = jnp.einsum("bo,boij,bi->bj", v1, aux["d2"], v2)
    total = _mse(y, target_value) + _mse(first, target_first)
    if second is not None:
      total += _mse(second, target_second)
    return total

  return loss


def _adam_init(params: Params) -> Dict[str, Any]:
  # Separate buffers for m and v: the step donates them.
  return {
    "step": jnp.zeros([], jnp.int32),
    "m": jax.tree.map(jnp.zeros_like, params),
    "v": jax.tree.map(jnp.zeros_like, params),
  }


def _adam_update(
  gradients: Params,
  state: Dict[str, Any],
  params: Params,
  beta_1: float = 0.9,
  beta_2: float = 0.999,
  epsilon: float = 1e-7,
) -> Tuple[Params, Dict[str, Any]]:
  """One step of `keras.optimizers.Adam(_LEARNING_RATE)`, as Keras writes it."""
  step = state["step"] + 1
  t = step.astype(jnp.float32)
  alpha = _LEARNING_RATE * jnp.sqrt(1 - beta_2**t) / (1 - beta_1**t)
  m = jax.tree.map(
    lambda m, g: m + (g - m) * (1 - beta_1), state["m"], gradients
  )
  v = jax.tree.map(
    lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state["v"], gradients
  )
  params = jax.tree.map(
    lambda p, m, v: p - alpha * m / (jnp.sqrt(v) + epsilon), params, m, v
  )
  return params, {"step": step, "m": m, "v": v}


def jax_train_step(loss: Callable[..., jax.Array], seed: int) -> Callable:
  """Jitted `(params, adam, x, aux) -> (params, adam, loss before update)`."""

  def step(params, adam, x, aux):
    # New directions every step, from the step number, as SobolevModel does.
    key = jax.random.fold_in(jax.random.key(seed), adam["step"])
    value, gradients = jax.value_and_grad(loss)(params, x, aux, key)
    params, adam = _adam_update(gradients, adam, params)
    return params, adam, value

  return jax.jit(step, donate_argnums=(0, 1))


class TfRunner:
  """A compiled `SobolevModel` and the batch iterator it trains on."""

  def __init__(
    self,
    net: keras.Model,
    kind: StepKind,
    x: np.ndarray,
    targets: Optional[Dict[str, np.ndarray]],
    teacher: Optional[keras.Model],
    steps: int,
    seed: int,
  ):
    self.x = x
    self.targets = targets
    self.seed = seed
    self.model = sobolev_tf.SobolevModel(
      net,
      order=kind.order,
      mode=kind.mode,
      num_projections=1,
      teacher=teacher,
      seed=seed,
    )
    self.model.compile(
      optimizer=keras.optimizers.Adam(_LEARNING_RATE),
      jit_compile=True,
      steps_per_execution=steps,
    )
    batch = x if targets is None else (x, targets)
    self.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())

  def initial_loss(self) -> float:
    """The objective on the batch with the current weights, eagerly."""
    targets = None
    if self.targets is not None:
      targets = {key: tf.constant(value) for key, value in self.targets.items()}
    losses = self.model.objective(
      lambda inputs: self.model.model(inputs, training=True),
      tf.constant(self.x),
      targets,
      teacher=self.model.teacher,
      seed=tf.constant([self.seed, 0], tf.int64),
    )
    return float(losses.total)

  def run(self) -> None:
    """Runs `steps` training steps: one `train_function` call."""
    if self.model.train_function is None:
      self.model.make_train_function()
    logs = self.model.train_function(self.iterator)
    logs["loss"].numpy()  # Waits for the step.


class JaxRunner:
  """The JAX reference step, its state and its batch."""

  def __init__(
    self,
    workload: Workload,
    kind: StepKind,
    net: keras.Model,
    x: np.ndarray,
    targets: Optional[Dict[str, np.ndarray]],
    teacher: Optional[keras.Model],
    steps: int,
    seed: int,
    method: str,
  ):
    self.steps = steps
    self.params = jax_params(net)
    self.adam = _adam_init(self.params)
    self.x = jnp.asarray(x)
    if teacher is not None:
      self.aux = {"teacher": jax_params(teacher)}
    else:
      self.aux = {key: jnp.asarray(value) for key, value in targets.items()}
    self.step = jax_train_step(
      jax_loss(workload, kind, teacher is not None, method), seed
    )

  def run(self) -> float:
    """Runs `steps` training steps; returns the first one's loss."""
    params, adam = self.params, self.adam
    first = None
    for _ in range(self.steps):
      params, adam, loss = self.step(params, adam, self.x, self.aux)
      if first is None:
        first = loss
    jax.block_until_ready((params, adam))
    self.params, self.adam = params, adam
    return float(first)


@dataclasses.dataclass
class Row:
  """The measurements of one workload and step kind."""

  workload: Workload
  kind: StepKind
  tf_seconds: List[float]
  jax_seconds: List[float]
  tf_warm_up: float
  jax_warm_up: float
  steps: int
  check: Optional[float]

  @property
  def tf_rate(self) -> float:
    """Median TF steps per second."""
    return self.steps / statistics.median(self.tf_seconds)

  @property
  def jax_rate(self) -> float:
    """Median JAX steps per second."""
    return self.steps / statistics.median(self.jax_seconds)


def _array_targets(
  rng: np.random.Generator, workload: Workload, order: int
) -> Dict[str, np.ndarray]:
  batch = (workload.batch_size, workload.num_outputs)
  shapes = {
    "value": batch,  # [B, out]
    "d1": batch + workload.input_shape,  # [B, out, in...]
    "d2": batch + workload.input_shape * 2,  # [B, out, in..., in...]
  }
  return {
    key: rng.standard_normal(shapes[key], dtype=np.float32)
    for key in TARGET_KEYS[: order + 1]
  }


def _is_deterministic(workload: Workload, kind: StepKind) -> bool:
  """Whether the loss is independent of the random directions."""
  if kind.order == 0 or kind.mode == "full":
    return True
  return kind.order == 1 and workload.num_outputs == 1 and not workload.teacher


def _timed(run: Callable[[], Any]) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def measure(
  workload: Workload,
  kind: StepKind,
  steps: int,
  repeats: int,
  seed: int,
  method: str,
) -> Row:
  """Warms up and times one row in both frameworks.

  Args:
    workload: network and batch size.
    kind: the step kind.
    steps: steps per repeat.
    repeats: timed repeats per framework.
    seed: seed of weights, data and directions.
    method: how JAX builds full derivatives, as `--jax_full`.

  Returns:
    The row's measurements.
  """
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(
    (workload.batch_size,) + workload.input_shape, dtype=np.float32
  )  # [B, in...]
  net = keras_net(workload, kind.activation, seed)
  teacher = None
  targets = None
  if workload.teacher and kind.order > 0:
    teacher = keras_net(workload, kind.activation, seed + 1)
  else:
    targets = _array_targets(rng, workload, kind.order)
  # The JAX parameters are copied before TF trains the network.
  jax_runner = JaxRunner(
    workload, kind, net, x, targets, teacher, steps, seed, method
  )
  tf_runner = TfRunner(net, kind, x, targets, teacher, steps, seed)

  check = None
  tf_loss = None
  if _is_deterministic(workload, kind):
    tf_loss = tf_runner.initial_loss()
  tf_warm_up = _timed(tf_runner.run)
  start = time.perf_counter()
  jax_loss_value = jax_runner.run()
  jax_warm_up = time.perf_counter() - start
  if tf_loss is not None:
    check = abs(tf_loss - jax_loss_value) / max(abs(jax_loss_value), 1e-30)
    if check > _CHECK_TOLERANCE:
      logging.warning(
        "%s/%s: first losses differ: TF %g, JAX %g.",
        workload.name,
        kind.name,
        tf_loss,
        jax_loss_value,
      )

  tf_seconds, jax_seconds = [], []
  for repeat in range(repeats):
    order = [(tf_runner, tf_seconds), (jax_runner, jax_seconds)]
    for runner, seconds in order[:: 1 if repeat % 2 == 0 else -1]:
      seconds.append(_timed(runner.run))
  row = Row(
    workload,
    kind,
    tf_seconds,
    jax_seconds,
    tf_warm_up,
    jax_warm_up,
    steps,
    check,
  )
  logging.info(
    "%s/%s: TF %.1f steps/s, JAX %.1f steps/s (warm-up %.1f s, %.1f s).",
    workload.name,
    kind.name,
    row.tf_rate,
    row.jax_rate,
    tf_warm_up,
    jax_warm_up,
  )
  del tf_runner, jax_runner, net, teacher
  keras.backend.clear_session()
  jax.clear_caches()
  gc.collect()
  return row


def _format_rate(rate: float) -> str:
  if rate >= 1000:
    return f"{rate:,.0f}"
  return f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def _spread(seconds: Sequence[float]) -> float:
  return (max(seconds) - min(seconds)) / statistics.median(seconds)


def markdown_table(rows: Sequence[Row]) -> str:
  """The results as a Markdown table, one line per row."""
  plain = {row.workload.name: row for row in rows if row.kind.name == "plain"}
  lines = [
    "| workload | step | TF steps/s | JAX steps/s | TF/JAX | TF time / "
    "plain | JAX time / plain | spread TF, JAX | warm-up s TF, JAX | "
    "loss check |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
  ]
  for row in rows:
    base = plain.get(row.workload.name)
    tf_cost = jax_cost = "-"
    if base is not None:
      tf_cost = f"{base.tf_rate / row.tf_rate:.2f}"
      jax_cost = f"{base.jax_rate / row.jax_rate:.2f}"
    check = "random" if row.check is None else f"{row.check:.0e}"
    if row.check == 0:
      check = "0"  # Bitwise equal.
    cells = [
      row.workload.label,
      row.kind.name,
      _format_rate(row.tf_rate),
      _format_rate(row.jax_rate),
      f"{row.tf_rate / row.jax_rate:.2f}",
      tf_cost,
      jax_cost,
      f"{_spread(row.tf_seconds):.0%}, {_spread(row.jax_seconds):.0%}",
      f"{row.tf_warm_up:.1f}, {row.jax_warm_up:.1f}",
      check,
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _command_line() -> str:
  env = [
    f"{name}={shlex.quote(os.environ[name])}"
    for name in (
      "JAX_PLATFORMS",
      "XLA_FLAGS",
      "TF_XLA_FLAGS",
      "KERAS_BACKEND",
      "PYTHONPATH",
    )
    if name in os.environ
  ]
  return " ".join(env + [shlex.quote(arg) for arg in sys.orig_argv])


def _git_revision() -> str:
  try:
    result = subprocess.run(
      ["git", "describe", "--always", "--dirty"],
      cwd=os.path.dirname(os.path.abspath(__file__)),
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    )
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return result.stdout.strip()


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def report_header(
  steps: int, repeats: int, load_before: str, method: str
) -> str:
  """Command line, versions, machine and settings, as Markdown."""
  nproc = len(os.sched_getaffinity(0))
  threads = (
    tf.config.threading.get_intra_op_parallelism_threads(),
    tf.config.threading.get_inter_op_parallelism_threads(),
  )
  load_after = ", ".join(f"{load:.2f}" for load in os.getloadavg())
  return "\n".join(
    [
      "# Training-step benchmark: sobolev_tf (TF/Keras) against JAX",
      "",
      f"- Command: `{_command_line()}` (in `{os.getcwd()}`)",
      "- Date: "
      + datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
      f"- sobolev_tf {sobolev_tf.__version__} (git {_git_revision()}), "
      f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
      f"Keras {keras.__version__}, JAX {jax.__version__}, jaxlib "
      f"{jaxlib.__version__}, NumPy {np.__version__}",
      f"- Machine: nproc = {nproc} ({_cpu_model()}); load average (1, 5, "
      f"15 min) {load_before} before, {load_after} after",
      f"- Threads: TF intra-op {threads[0]}, inter-op {threads[1]} (0: "
      "default, from the CPUs); JAX XLA:CPU default; JAX devices "
      f"{[str(device) for device in jax.devices()]}",
      f"- {steps} steps per repeat (Keras steps_per_execution={steps}), "
      f"{repeats} repeats after one warm-up repeat; medians",
      f"- JAX full derivatives: order 1 {full_method(1, method)}, order 2 "
      f"{full_method(2, method)} (--jax_full={method})",
    ]
  )


_LEGEND = """\
TF/JAX > 1: TF faster. `time / plain`: the step's time over the workload's
`plain` step's time in the same framework. Spread: (max - min) / median of
the repeats. Warm-up: the first repeat, compilation included. Loss check:
relative difference of the two frameworks' first losses on the same weights
(`random` where the loss depends on random directions). Atari Sobolev rows
distil a frozen teacher (its forward pass and projected gradient are part of
the step); Atari `plain` fits value arrays."""


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if keras.backend.backend() != "tensorflow":
    raise app.UsageError(
      "The benchmark measures Keras on TensorFlow; set KERAS_BACKEND="
      f"tensorflow. Received backend: {keras.backend.backend()}"
    )
  unknown = sorted(set(_WORKLOADS.value) - set(WORKLOADS))
  unknown += sorted(set(_KINDS.value) - set(KINDS))
  if unknown:
    raise app.UsageError(f"Unknown workloads or kinds: {unknown}")
  jax.config.update("jax_platforms", "cpu")
  steps, repeats = _STEPS.value, _REPEATS.value
  if _QUICK.value:
    steps, repeats = _QUICK_STEPS, _QUICK_REPEATS
  load_before = ", ".join(f"{load:.2f}" for load in os.getloadavg())

  rows = []
  for name in _WORKLOADS.value:
    workload = WORKLOADS[name]
    for kind_name in workload.kinds:
      if _KINDS.value and kind_name not in _KINDS.value:
        continue
      rows.append(
        measure(
          workload,
          KINDS[kind_name],
          steps,
          repeats,
          _SEED.value,
          _JAX_FULL.value,
        )
      )

  report = "\n\n".join(
    [
      report_header(steps, repeats, load_before, _JAX_FULL.value),
      markdown_table(rows),
      _LEGEND,
    ]
  )
  print(report)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as output:
      output.write(report + "\n")
    logging.info("Wrote %s", _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
