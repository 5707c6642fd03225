"""Property-based tests of the Sobolev objective's input validation.

Issue 13: every input either trains to finite weights or raises a
`ValueError` that names the argument involved. Hypothesis draws
configurations (valid and invalid options), targets (right or perturbed
shapes, dtypes, NaN/Inf placements, masks, sample weights) and small
training runs. Examples are derandomised, so CI sees the same ones on
every run; a failure prints the example and its `@reproduce_failure` blob.
"""

import dataclasses
import functools
from typing import Any
from typing import Optional

from absl.testing import parameterized
import hypothesis
from hypothesis import strategies as st
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import directional
from sobolev_tf import losses as losses_lib
from sobolev_tf import model as model_lib
from sobolev_tf import objective as objective_lib
from sobolev_tf import targets as targets_lib
from sobolev_tf import testing

testing.configure_logical_cpus(2)

TERMS = config_lib.TERMS
DIRECTIONS = {
  k: directional.DirectionalTarget.directions_key(k) for k in (1, 2)
}
DIRECTIONAL = {k: directional.DirectionalTarget.values_key(k) for k in (1, 2)}
MASKS = targets_lib.MASKS


def _settings(max_examples: int) -> hypothesis.settings:
  # Derandomised and without an example database: the same examples on
  # every run and machine, none replayed from an earlier local failure.
  return hypothesis.settings(
    max_examples=max_examples,
    deadline=None,
    derandomize=True,
    database=None,
  )


def _names_one_of(message: str, names) -> bool:
  return any(name in message for name in names)


def _quoted(key: str) -> tuple:
  """How messages name a data key: `y['d1']`, `['d1']` or `` `d1` ``."""
  return (f"'{key}'", f"`{key}`")


# Configurations.


class _Object:
  """Neither a number, a name nor a callable."""

  def __repr__(self):
    return "<object>"


def _per_term(order: int, values: st.SearchStrategy) -> st.SearchStrategy:
  """One value for every term, one per term, or a dict by (some) terms."""
  keys = TERMS[: order + 1]
  size = order + 1
  return st.one_of(
    values,
    st.lists(values, min_size=size, max_size=size),
    st.lists(values, min_size=size, max_size=size).map(tuple),
    st.dictionaries(st.sampled_from(keys), values, max_size=size),
  )


_NO_DEFAULT = object()


def _per_term_invalid(
  order: int,
  values: st.SearchStrategy,
  invalid: st.SearchStrategy,
  default=_NO_DEFAULT,
) -> st.SearchStrategy:
  """Per-term options that are wrong whatever the rest of the config.

  `default` is the one whole value that means "the default" (None for
  `loss_weights`): wrong for one term, right for the option as a whole.
  """
  keys = TERMS[: order + 1]
  size = order + 1
  wrong_lengths = [n for n in range(5) if n != size]
  # Keys of mixed types too: sorting them for a message must not fail.
  unknown_keys = st.sampled_from(
    [("grad",), ("d3",), ("value_mask",), (1,), (None, "grad"), (1, "d3")]
    + [(key,) for key in TERMS[order + 1 :]]
  )
  return st.one_of(
    invalid.filter(lambda value: value is not default),
    st.tuples(
      st.lists(values, min_size=size, max_size=size),
      st.integers(0, size - 1),
      invalid,
    ).map(lambda t: t[0][: t[1]] + [t[2]] + t[0][t[1] + 1 :]),
    st.sampled_from(wrong_lengths).flatmap(
      lambda n: st.lists(values, min_size=n, max_size=n)
    ),
    st.tuples(
      st.dictionaries(st.sampled_from(keys), values, max_size=size),
      unknown_keys,
      values,
    ).map(lambda t: {**t[0], **dict.fromkeys(t[1], t[2])}),
    st.tuples(st.sampled_from(keys), invalid).map(lambda t: {t[0]: t[1]}),
  )


_WEIGHT = st.one_of(
  st.sampled_from([0, 1, 2]),
  st.floats(0.0, 1e3),
  st.floats(0.0, 10.0).map(np.float32),
)
_BAD_WEIGHT = st.sampled_from(
  [-1, -1e-3, np.nan, np.inf, -np.inf, "1", "a", True, None, {1.0}, 1j]
) | st.just(_Object())
_LOSS = st.sampled_from(
  [
    "mse",
    "mae",
    "huber",
    "log_cosh",
    "sum_squared_error",
    "mean_squared_error",
    keras.losses.MeanSquaredError(),
    losses_lib.sum_squared_error,
  ]
)
_BAD_LOSS = st.sampled_from([3, None, "nosuch", "", 1.5, True]) | st.just(
  _Object()
)
_SCALE_VALUE = st.one_of(
  st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=3),
  st.lists(st.integers(1, 5), min_size=1, max_size=3).map(np.array),
  st.floats(1e-3, 1e3).map(lambda s: np.full((2, 2), s)),
)
_BAD_SCALE_VALUE = st.sampled_from(
  [
    [0.0],
    [-1.0],
    [1.0, np.nan],
    [np.inf],
    1.0,
    "a",
    None,
    [1j],
    [True, True],
    [[1.0], [1.0, 2.0]],
  ]
) | st.just(_Object())


def _scales(order: int) -> st.SearchStrategy:
  keys = TERMS[1 : order + 1]
  if not keys:
    return st.sampled_from([None, {}])
  return st.none() | st.dictionaries(
    st.sampled_from(keys), _SCALE_VALUE, max_size=len(keys)
  )


def _bad_scales(order: int) -> st.SearchStrategy:
  keys = TERMS[1 : order + 1] or ("d1",)
  unknown = ["value", "d9", 1] + list(TERMS[order + 1 :])
  return st.one_of(
    st.sampled_from([[1.0], "d1", 1.0, [("d1", [1.0])]]),
    st.tuples(st.sampled_from(unknown), _SCALE_VALUE).map(
      lambda t: {t[0]: t[1]}
    ),
    st.tuples(st.sampled_from(keys), _BAD_SCALE_VALUE).map(
      lambda t: {t[0]: t[1]}
    ),
  )


@functools.cache
def _valid_option(name: str, order: int) -> st.SearchStrategy:
  return {
    "order": st.sampled_from([order, np.int64(order)]),
    "mode": st.sampled_from(config_lib.MODES),
    "num_projections": st.integers(1, 8) | st.just(np.int32(2)),
    "loss_weights": st.none() | _per_term(order, _WEIGHT),
    "losses": _per_term(order, _LOSS),
    "output_transform": st.sampled_from(
      [None, "log_softmax", "softmax", "sigmoid", tf.nn.tanh]
    ),
    "jacobian_mode": st.sampled_from(("auto", "reverse", "forward")),
    "nonfinite_targets": st.sampled_from(config_lib.NONFINITE_POLICIES),
    "derivative_scales": _scales(order),
    "balance": st.sampled_from(config_lib.BALANCES),
    "balance_decay": st.one_of(
      st.floats(0.0, 0.999),
      st.just(0),
      st.floats(0.0, 0.999).map(np.float32),
      st.floats(0.0, 0.999).map(np.float64),
    ),
    "balance_floor": st.one_of(
      st.floats(0.0, 1e6),
      st.just(0),
      st.floats(0.0, 10.0).map(np.float32),
    ),
  }[name]


@functools.cache
def _invalid_option(name: str, order: int) -> st.SearchStrategy:
  names = ("Full", "", None, 1, ["full"], b"full")
  return {
    "order": st.sampled_from(
      [-1, 3, True, False, 1.0, "1", None, [1], np.bool_(True)]
    ),
    "mode": st.sampled_from(("exact",) + names),
    "num_projections": st.sampled_from(
      [0, -1, True, 1.5, "2", None, 2**40, np.float64(2.0)]
    ),
    "loss_weights": _per_term_invalid(
      order, _WEIGHT, _BAD_WEIGHT, default=None
    ),
    "losses": _per_term_invalid(order, _LOSS, _BAD_LOSS),
    "output_transform": st.sampled_from(
      ["tanh", "", 3, ["softmax"], {}, {"softmax": 1}, b"softmax"]
    ),
    "jacobian_mode": st.sampled_from(("x",) + names),
    "nonfinite_targets": st.sampled_from(("skip", True) + names),
    "derivative_scales": _bad_scales(order),
    "balance": st.sampled_from(("gradnorm",) + names),
    "balance_decay": st.sampled_from(
      [1.0, 1, -0.1, np.nan, np.inf, True, "0.5", None, [0.5]]
    ),
    "balance_floor": st.sampled_from(
      [-0.1, -1, np.nan, np.inf, True, "0.1", None, [0.1]]
    ),
  }[name]


@st.composite
def _config_kwargs(draw):
  """`(kwargs, invalid)`: options, and the names of the ones that are wrong."""
  order = draw(st.integers(0, config_lib.MAX_ORDER))
  names = config_lib.SobolevConfig.field_names()
  # Mostly one wrong option at a time: options are checked in turn, so with
  # several the later ones would rarely be reached.
  wrong = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
  choices = {
    name: "invalid"
    if name in wrong
    else draw(st.sampled_from(["absent", "valid"]))
    for name in names
  }
  # Per-term options are valid for the order the config ends up with.
  if choices["order"] != "valid":
    order = 1
  kwargs, invalid = {}, set()
  for name, choice in choices.items():
    if choice == "valid":
      kwargs[name] = draw(_valid_option(name, order))
    elif choice == "invalid":
      kwargs[name] = draw(_invalid_option(name, order))
      invalid.add(name)
  mode = kwargs.get("mode", "full")
  policy = kwargs.get("nonfinite_targets", "raise")
  if mode == "stochastic" and policy == "missing":
    invalid |= {"mode", "nonfinite_targets"}
  return kwargs, invalid


class ConfigFuzzTest(tf.test.TestCase, parameterized.TestCase):
  @_settings(max_examples=800)
  @hypothesis.given(_config_kwargs())
  def test_config_is_valid_or_names_the_option(self, drawn):
    kwargs, invalid = drawn
    try:
      config = config_lib.SobolevConfig(**kwargs)
    except ValueError as error:
      self.assertTrue(invalid, f"valid options rejected: {error}")
      named = [f"`{name}`" for name in invalid]
      named += [f"`{name}[" for name in invalid]
      self.assertTrue(
        _names_one_of(str(error), named),
        f"{error!r} does not name any of {sorted(invalid)}",
      )
      return
    self.assertFalse(invalid, f"accepted invalid {sorted(invalid)}")
    self._assert_normalised(config)

  def _assert_normalised(self, config):
    self.assertIsInstance(config.order, int)
    self.assertIn(config.order, range(config_lib.MAX_ORDER + 1))
    self.assertLen(config.loss_weights, config.order + 1)
    for weight in config.loss_weights:
      self.assertIsInstance(weight, float)
      self.assertTrue(np.isfinite(weight) and weight >= 0)
    self.assertLen(config.losses, config.order + 1)
    for loss in config.losses:
      self.assertIsInstance(loss, keras.losses.Loss)
    self.assertContainsSubset(
      set(config.derivative_scales), set(TERMS[1 : config.order + 1])
    )
    for scale in config.derivative_scales.values():
      self.assertEqual(scale.dtype, np.float64)
      self.assertTrue(np.all(np.isfinite(scale) & (scale > 0)))
    self.assertIsInstance(config.balance_decay, float)
    self.assertTrue(0 <= config.balance_decay < 1)

  # Found by the property above: each raised TypeError, another error that
  # did not name the option, or was accepted.
  @parameterized.named_parameters(
    ("transform_list", "output_transform", ["softmax"]),
    ("transform_dict", "output_transform", {}),
    ("scales_list", "derivative_scales", [1.0]),
    ("scales_text", "derivative_scales", "d1"),
    ("scales_pairs", "derivative_scales", [("d1", [1.0])]),
    ("scale_text", "derivative_scales", {"d1": "a"}),
    ("scale_object", "derivative_scales", {"d1": _Object()}),
    ("scale_complex", "derivative_scales", {"d1": [1j]}),
    ("scale_bool", "derivative_scales", {"d1": [True]}),
    ("scale_ragged", "derivative_scales", {"d1": [[1.0], [1.0, 2.0]]}),
    ("weight_text", "loss_weights", "1"),
    ("weight_bool", "loss_weights", True),
    ("weight_keys_of_mixed_types", "loss_weights", {None: 0, "grad": 0}),
    ("loss_keys_of_mixed_types", "losses", {1: "mse", "d3": "mse"}),
  )
  def test_invalid_option_regressions(self, name, value):
    with self.assertRaisesRegex(ValueError, f"`{name}"):
      config_lib.SobolevConfig(**{name: value})

  def test_numpy_balance_decay(self):
    # np.float64 is a float subclass and was accepted; np.float32 was not.
    config = config_lib.SobolevConfig(balance_decay=np.float32(0.5))
    self.assertEqual(config.balance_decay, 0.5)
    self.assertIsInstance(config.balance_decay, float)


# Targets.

_FLOATS = ("float16", "float32", "float64")
_INPUT_FLOATS = _FLOATS


@functools.cache
def _mlp(in_shape: tuple, out_shape: tuple, dtype: str):
  """A one-hidden-layer tanh network as a plain callable, one per shape."""
  rng = np.random.default_rng(0)
  in_size = int(np.prod(in_shape))
  out_size = int(np.prod(out_shape, dtype=np.int64))
  hidden = tf.Variable(rng.normal(size=(in_size, 4)), dtype=dtype)
  output = tf.Variable(rng.normal(size=(4, out_size)) / 2, dtype=dtype)
  out_shape = tf.constant(out_shape, tf.int32)

  def mlp(x):
    flat = tf.reshape(x, [-1, in_size])  # [B, in]
    y = tf.tanh(flat @ hidden) @ output  # [B, out]
    return tf.reshape(y, tf.concat([tf.shape(x)[:1], out_shape], 0))

  mlp.variables = (hidden, output)
  return mlp


@dataclasses.dataclass
class _Problem:
  """One call of the objective: options, data, and what must happen.

  Attributes:
    options: the `SobolevObjective` options.
    in_shape: the input's non-batch shape.
    out_shape: the model's non-batch output shape.
    x: the input batch.
    y: the targets by data key, before `container` packs them.
    container: `"dict"`, `"tuple"` (`(value, d1, ...)`), `"tensor"` (the
      value alone) or `"long_tuple"` (a tuple with one entry too many).
    sample_weight: as passed to the objective.
    training: whether the call updates the balance's statistics.
    perturbation: the name of what was made wrong, or `""`.
    names: the names of which an error must mention one.
  """

  options: dict
  in_shape: tuple
  out_shape: tuple
  x: np.ndarray
  y: dict
  container: str = "dict"
  sample_weight: Any = None
  training: bool = False
  perturbation: str = ""
  names: tuple = ()

  @property
  def batch(self) -> int:
    return len(self.x)

  @property
  def order(self) -> int:
    return self.options["order"]

  @property
  def active_orders(self) -> tuple:
    weights = self.options["loss_weights"]
    return tuple(k for k, w in enumerate(weights) if w > 0)

  def directional(self, order: int) -> bool:
    return order in DIRECTIONAL and DIRECTIONAL[order] in self.y

  def data_key(self, order: int) -> str:
    return DIRECTIONAL[order] if self.directional(order) else TERMS[order]

  def arrays(self, order: int, masks: bool = True) -> list:
    """The data keys of an order's target, directions and mask, if given."""
    keys = [self.data_key(order)]
    if self.directional(order):
      keys.append(DIRECTIONS[order])
    if masks and MASKS[order] in self.y:
      keys.append(MASKS[order])
    return [key for key in keys if key in self.y]

  def active_arrays(self, masks: bool = True) -> list:
    return [k for o in self.active_orders for k in self.arrays(o, masks)]

  def targets(self):
    """`y` packed as `container`."""
    if self.container == "dict":
      return dict(self.y)
    values = tuple(self.y[key] for key in TERMS[: len(self.y)])
    if self.container == "tensor":
      return values[0]
    if self.container == "long_tuple":
      return values + (values[-1],) * (4 - len(values))
    return values


def _names(key: str) -> tuple:
  """Names an error about data key `key` may use: it, or its pair."""
  for order, values_key in DIRECTIONAL.items():
    if key in (values_key, DIRECTIONS[order]):
      return _quoted(values_key) + _quoted(DIRECTIONS[order])
  return _quoted(key)


_CONTAINERS = ("dict", "tuple", "tensor")


def _container_fits(container: str, y: dict) -> bool:
  """Whether `y` can be passed as `container` (see `_Problem`)."""
  if container == "dict":
    return True
  if not y or set(y) != set(TERMS[: len(y)]):
    return False
  # A list would be read as a tuple of terms.
  return container != "tensor" or (
    len(y) == 1 and not isinstance(y["value"], list)
  )


def _wrong_rank(draw, problem):
  key = draw(st.sampled_from(problem.active_arrays()))
  array = problem.y[key]
  if array.ndim >= 2 and draw(st.booleans()):
    problem.y[key] = array[..., 0]
  else:
    problem.y[key] = array[..., None]
  return _names(key)


def _wrong_size(draw, problem):
  keys = [k for k in problem.active_arrays() if problem.y[k].ndim >= 2]
  key = draw(st.sampled_from(keys))
  array = problem.y[key]
  axis = draw(st.integers(1, array.ndim - 1))
  size = array.shape[axis]
  new_size = size + 1 if size == 1 or draw(st.booleans()) else size - 1
  problem.y[key] = np.take(array, np.arange(new_size) % size, axis=axis)
  return _names(key)


def _wrong_batch(draw, problem):
  key = draw(st.sampled_from(problem.active_arrays()))
  array = problem.y[key]
  batch = draw(st.sampled_from([0, 2])) if problem.batch == 1 else 1
  problem.y[key] = np.ones((batch,) + array.shape[1:], array.dtype)
  return _names(key)


def _no_batch_axis(draw, problem):
  key = draw(st.sampled_from(problem.active_arrays()))
  problem.y[key] = draw(st.sampled_from([1.0, np.float32(0.5), np.ones(())]))
  return _names(key)


def _not_floating(draw, problem):
  key = draw(st.sampled_from(problem.active_arrays(masks=False)))
  dtype = draw(st.sampled_from(["int32", "int64", "bool", "complex64", "U1"]))
  problem.y[key] = np.zeros(problem.y[key].shape, dtype)
  return _names(key)


def _ragged(draw, problem):
  keys = [k for k in problem.active_arrays() if problem.y[k].ndim >= 2]
  key = draw(st.sampled_from(keys))
  rows = problem.y[key].tolist()
  rows[-1] = rows[-1][:-1]
  problem.y[key] = rows
  return _names(key)


def _unknown_key(draw, problem):
  keys = draw(
    st.sampled_from([("grad",), ("D1",), ("d1_jacobian",), (None, "grad")])
  )
  for key in keys:
    problem.y[key] = np.zeros((problem.batch, 1), "float32")
  return _quoted("grad") + _quoted("D1") + _quoted("d1_jacobian")


def _missing_key(draw, problem):
  order = draw(st.sampled_from(problem.active_orders))
  keys = problem.arrays(order, masks=False)
  for key in draw(st.sampled_from([keys, keys[:1], keys[1:]])) or keys:
    del problem.y[key]
  return _quoted(TERMS[order]) + _names(keys[0])


def _beyond_order(draw, problem):
  order = draw(st.integers(problem.order + 1, config_lib.MAX_ORDER))
  key = draw(st.sampled_from([TERMS[order], MASKS[order], DIRECTIONS[order]]))
  problem.y[key] = np.zeros((problem.batch, 1), "float32")
  return _quoted(TERMS[order]) + _names(key)


def _both_forms(draw, problem):
  order = draw(st.sampled_from([k for k in problem.active_orders if k]))
  batch, out, inputs = problem.batch, problem.out_shape, problem.in_shape
  if problem.directional(order):
    problem.y[TERMS[order]] = np.zeros((batch,) + out + inputs * order)
  else:
    problem.y[DIRECTIONS[order]] = np.ones((batch, 1) + inputs)
    problem.y[DIRECTIONAL[order]] = np.zeros(
      (batch,) + out + (1,) + (inputs if order == 2 else ())
    )
  return _quoted(TERMS[order])


def _no_directions(draw, problem):
  order = draw(st.sampled_from([k for k in problem.active_orders if k]))
  for key in problem.arrays(order):
    del problem.y[key]
  batch, out, inputs = problem.batch, problem.out_shape, problem.in_shape
  problem.y[DIRECTIONS[order]] = np.ones((batch, 0) + inputs)
  problem.y[DIRECTIONAL[order]] = np.zeros(
    (batch,) + out + (0,) + (inputs if order == 2 else ())
  )
  return _names(DIRECTIONS[order])


def _projected_mask(draw, problem):
  order = draw(st.sampled_from(problem.active_orders))
  problem.y[MASKS[order]] = np.ones(problem.y[problem.data_key(order)].shape)
  return _quoted(TERMS[order]) + _quoted(MASKS[order])


def _text_mask(draw, problem):
  order = draw(st.sampled_from(problem.active_orders))
  shape = problem.y[problem.data_key(order)].shape
  problem.y[MASKS[order]] = np.full(shape, draw(st.sampled_from(["1", "a"])))
  return _quoted(MASKS[order])


def _sample_weight_length(draw, problem):
  length = draw(st.sampled_from([0, 2])) if problem.batch == 1 else 1
  weight = np.ones(draw(st.sampled_from([length, problem.batch + 1])))
  if draw(st.booleans()):
    problem.sample_weight = weight
  else:
    order = draw(st.sampled_from(problem.active_orders))
    problem.sample_weight = {TERMS[order]: weight}
  return ("sample_weight",)


def _sample_weight_matrix(draw, problem):
  del draw
  problem.sample_weight = np.ones((problem.batch, 2))
  return ("sample_weight",)


def _sample_weight_key(draw, problem):
  key = draw(st.sampled_from(["grad", "d1_directional_weight", 0]))
  problem.sample_weight = {key: np.ones(problem.batch)}
  return ("`sample_weight`",)


def _text_sample_weight(draw, problem):
  weight = np.full(problem.batch, draw(st.sampled_from(["1", "a"])))
  if draw(st.booleans()):
    problem.sample_weight = weight
  else:
    problem.sample_weight = {TERMS[problem.active_orders[-1]]: weight}
  return ("sample_weight",)


def _long_tuple(draw, problem):
  del draw
  problem.container = "long_tuple"
  return ("tuple",)


# Each perturbation makes a problem invalid and returns the names of which
# the error must mention one; `applies` says when it can be made.
_PERTURBATIONS = {
  "wrong_rank": (_wrong_rank, lambda p: p.active_orders),
  "wrong_size": (
    _wrong_size,
    lambda p: any(p.y[k].ndim >= 2 for k in p.active_arrays()),
  ),
  "wrong_batch": (_wrong_batch, lambda p: p.active_orders),
  "no_batch_axis": (_no_batch_axis, lambda p: p.active_orders),
  "not_floating": (_not_floating, lambda p: p.active_orders),
  "ragged": (
    _ragged,
    lambda p: p.batch >= 2 and any(p.y[k].ndim >= 2 for k in p.active_arrays()),
  ),
  "unknown_key": (_unknown_key, lambda p: True),
  "missing_key": (_missing_key, lambda p: p.active_orders),
  "beyond_order": (_beyond_order, lambda p: p.order < config_lib.MAX_ORDER),
  "both_forms": (_both_forms, lambda p: any(k > 0 for k in p.active_orders)),
  "no_directions": (
    _no_directions,
    lambda p: any(k > 0 for k in p.active_orders),
  ),
  "projected_mask": (
    _projected_mask,
    lambda p: p.active_orders and p.options["mode"] == "stochastic",
  ),
  "text_mask": (
    _text_mask,
    lambda p: p.active_orders and p.options["mode"] == "full",
  ),
  "sample_weight_length": (_sample_weight_length, lambda p: p.active_orders),
  "sample_weight_matrix": (
    _sample_weight_matrix,
    lambda p: p.active_orders and p.batch,
  ),
  "sample_weight_key": (_sample_weight_key, lambda p: True),
  "text_sample_weight": (_text_sample_weight, lambda p: p.active_orders),
  "long_tuple": (_long_tuple, lambda p: p.container != "dict"),
}

# Perturbations that only apply in one mode.
_PERTURBATION_MODES = {"projected_mask": "stochastic", "text_mask": "full"}

_NONFINITE = (np.nan, np.inf, -np.inf)


@st.composite
def _problems(draw, perturbation: str = ""):
  """A valid call of the objective with NaNs, then `perturbation` if any."""
  batch = draw(st.sampled_from([3, 1, 2, 4, 0]))
  in_shape = tuple(
    draw(st.sampled_from([[1], [2], [3], [1, 2], [2, 2], [2, 1]]))
  )
  out_shape = tuple(draw(st.sampled_from([[], [1], [3], [2, 1], [1, 2]])))
  order = draw(st.integers(0, config_lib.MAX_ORDER))
  mode = _PERTURBATION_MODES.get(perturbation) or draw(
    st.sampled_from(config_lib.MODES)
  )
  policies = config_lib.NONFINITE_POLICIES
  if mode == "stochastic":
    policies = tuple(p for p in policies if p != "missing")
  weights = draw(
    st.lists(
      st.sampled_from([1.0, 0.5, 0.0]), min_size=order + 1, max_size=order + 1
    )
  )
  options = dict(
    order=order,
    mode=mode,
    nonfinite_targets=draw(st.sampled_from(policies)),
    loss_weights=weights,
    balance=draw(st.sampled_from(config_lib.BALANCES)),
    num_projections=draw(st.integers(1, 2)),
  )
  dtype = draw(st.sampled_from(_INPUT_FLOATS))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  problem = _Problem(
    options=options,
    in_shape=in_shape,
    out_shape=out_shape,
    x=rng.normal(size=(batch,) + in_shape).astype(dtype),
    y={},
    training=draw(st.booleans()),
  )
  # Plain targets (full ones, every order, no masks) also fit in a tuple.
  plain = perturbation == "long_tuple" or draw(st.booleans())
  for k in range(order + 1):
    # Targets of zero-weight terms may be given or not.
    if not plain and weights[k] == 0 and draw(st.booleans()):
      continue
    target_dtype = draw(st.sampled_from(_FLOATS))
    if not plain and k and draw(st.booleans()):
      count = draw(st.integers(1, 2))
      problem.y[DIRECTIONS[k]] = rng.normal(
        size=(batch, count) + in_shape
      ).astype(target_dtype)
      shape = (batch,) + out_shape + (count,) + (in_shape if k == 2 else ())
      key = DIRECTIONAL[k]
    else:
      shape = (batch,) + out_shape + in_shape * k
      key = TERMS[k]
    problem.y[key] = rng.normal(size=shape).astype(target_dtype)
    if not plain and mode == "full" and draw(st.booleans()):
      mask_dtype = draw(st.sampled_from(["bool", "int32", "float32"]))
      problem.y[MASKS[k]] = (rng.random(shape) < 0.8).astype(mask_dtype)
  problem.container = draw(
    st.sampled_from([c for c in _CONTAINERS if _container_fits(c, problem.y)])
  )
  _draw_sample_weight(draw, problem, rng)
  _draw_nonfinite(draw, problem)
  if perturbation:
    perturb, applies = _PERTURBATIONS[perturbation]
    hypothesis.assume(applies(problem))
    problem.perturbation = perturbation
    problem.names = perturb(draw, problem)
    if not _container_fits(problem.container, problem.y):
      problem.container = "dict"
  return problem


def _draw_sample_weight(draw, problem, rng):
  kind = draw(st.sampled_from(["none", "array", "column", "terms", "keras"]))
  weight = rng.random(problem.batch).astype(draw(st.sampled_from(_FLOATS)))
  if draw(st.booleans()):
    weight = rng.integers(0, 3, problem.batch)
  if kind == "array":
    problem.sample_weight = weight
  elif kind == "column":
    problem.sample_weight = weight[:, None]
  elif kind == "terms":
    keys = draw(st.sets(st.sampled_from(TERMS[: problem.order + 1])))
    problem.sample_weight = dict.fromkeys(keys, weight)
  elif kind == "keras":
    # Keras hands a NumPy sample weight as one entry per key of y.
    problem.sample_weight = dict.fromkeys(problem.y, weight)


def _draw_nonfinite(draw, problem):
  """Puts NaN or Inf at a few entries of targets and directions (or x)."""
  keys = sorted(k for k in problem.y if k not in MASKS.values())
  if keys:
    places = draw(
      st.lists(
        st.tuples(
          st.sampled_from(keys),
          st.floats(0.0, 1.0, exclude_max=True),
          st.sampled_from(_NONFINITE),
        ),
        max_size=3,
      )
    )
    for key, where, value in places:
      flat = problem.y[key].reshape(-1)
      if flat.size:
        flat[int(where * flat.size)] = value
  if problem.batch and draw(st.sampled_from([False] * 5 + [True])):
    problem.x.reshape(-1)[0] = draw(st.sampled_from(_NONFINITE))


def _nonfinite_keys(problem) -> list:
  """The active data keys whose arrays hold NaN or Inf where they count.

  An entry under a zero mask never counts, NaN or not.
  """
  keys = []
  for key in problem.active_arrays(masks=False):
    value = problem.y[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
      continue
    finite = np.isfinite(value)
    mask = problem.y.get(key + "_mask")
    if isinstance(mask, np.ndarray) and mask.shape == value.shape:
      finite |= mask == 0
    if not finite.all():
      keys.append(key)
  return keys


def _flat(array: np.ndarray, axes: int = 1) -> np.ndarray:
  """`array` with the axes after the first `axes` flattened into one."""
  kept = array.shape[:axes]
  return array.reshape(kept + (int(np.prod(array.shape[axes:])),))


def _expected_entries(problem) -> dict:
  """Each active term's entries: in masks, finite, in kept examples."""
  batch, policy = problem.batch, problem.options["nonfinite_targets"]
  finite, counted = {}, {}
  for order in problem.active_orders:
    key = TERMS[order]
    target = problem.y[problem.data_key(order)]
    entry_finite = np.isfinite(target)
    if problem.directional(order):
      # A direction with NaN or Inf leaves its derivatives unknown.
      directions = problem.y[DIRECTIONS[order]]
      count = directions.shape[1]
      along = _flat(np.isfinite(directions), axes=2).all(-1)  # [B, K]
      trailing = problem.in_shape if order == 2 else ()
      along = along.reshape(
        (batch,)
        + (1,) * len(problem.out_shape)
        + (count,)
        + (1,) * len(trailing)
      )
      entry_finite = entry_finite & along
    entry_finite = _flat(entry_finite)
    projected = problem.options["mode"] == "stochastic"
    if order and projected and not problem.directional(order):
      # Projections mix every entry of an example.
      size = problem.options["num_projections"] * int(np.prod(problem.in_shape))
      rows = entry_finite.all(axis=1, keepdims=True)
      entry_finite = np.broadcast_to(rows, (batch, size))
    mask = problem.y.get(MASKS[order])
    mask = np.ones_like(entry_finite) if mask is None else mask != 0
    finite[key] = entry_finite
    counted[key] = _flat(mask)
  if policy == "missing":
    return {k: int((finite[k] & counted[k]).sum()) for k in finite}
  keep = np.ones(batch, bool)
  if policy == "drop":
    for key, entry_finite in finite.items():
      keep &= (entry_finite | ~counted[key]).all(axis=1)
  return {k: int((counted[k] & keep[:, None]).sum()) for k in finite}


class TargetsFuzzTest(tf.test.TestCase, parameterized.TestCase):
  @_settings(max_examples=250)
  @hypothesis.given(_problems())
  def test_valid_targets_give_finite_losses_or_nan_errors(self, problem):
    self._check(problem)

  @parameterized.named_parameters((name, name) for name in _PERTURBATIONS)
  @_settings(max_examples=20)
  @hypothesis.given(data=st.data())
  def test_perturbed_targets_raise_naming_the_argument(self, name, data):
    self._check(data.draw(_problems(name), label="problem"))

  def _check(self, problem):
    """Losses finite with the right entry counts, or a ValueError naming."""
    policy = problem.options["nonfinite_targets"]
    # What the examples cover: pytest --hypothesis-show-statistics.
    hypothesis.event("batch", problem.batch)
    hypothesis.event("active orders", str(problem.active_orders))
    hypothesis.event("mode", problem.options["mode"])
    hypothesis.event("policy", policy)
    hypothesis.event("NaN in x", not np.isfinite(problem.x).all())
    hypothesis.event("NaN in active data", bool(_nonfinite_keys(problem)))
    nonfinite = _nonfinite_keys(problem) if policy == "raise" else []
    names = problem.names + tuple(n for k in nonfinite for n in _names(k))
    fn = _mlp(problem.in_shape, problem.out_shape, problem.x.dtype.name)
    objective = objective_lib.SobolevObjective(**problem.options)
    try:
      with tf.GradientTape() as tape:
        losses = objective(
          fn,
          problem.x,
          problem.targets(),
          sample_weight=problem.sample_weight,
          seed=[1, 2],
          training=problem.training,
        )
    except ValueError as error:
      hypothesis.event("outcome", "ValueError")
      self.assertTrue(names, f"valid inputs rejected: {error!r}")
      self.assertTrue(
        _names_one_of(str(error), names),
        f"{error!r} names none of {names}",
      )
      return
    hypothesis.event("outcome", "losses")
    self.assertFalse(problem.perturbation, f"accepted {problem.perturbation!r}")
    self.assertFalse(nonfinite, f"accepted NaN or Inf in {nonfinite}")
    if not np.isfinite(problem.x).all():
      self.assertFalse(bool(losses.finite), "NaN in x but finite")
      return
    self.assertTrue(bool(losses.finite), losses)
    self.assertTrue(np.isfinite(losses.total), losses.total)
    for key, term in losses.terms.items():
      self.assertTrue(np.isfinite(term), f"{key}: {term}")
    gradients = tape.gradient(
      losses.total,
      fn.variables,
      unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    for gradient in gradients:
      self.assertTrue(np.all(np.isfinite(gradient)), gradient)
    self.assertEqual(
      {key: int(count) for key, count in losses.entries.items()},
      _expected_entries(problem),
    )


class TargetsRegressionTest(tf.test.TestCase, parameterized.TestCase):
  """The targets bugs the properties above found, one example each."""

  def setUp(self):
    super().setUp()
    self.model = _mlp((2,), (1,), "float32")
    rng = np.random.default_rng(0)
    self.x = rng.normal(size=(3, 2)).astype("float32")
    self.directions = rng.normal(size=(3, 2, 2)).astype("float32")
    self.y = {
      "value": rng.normal(size=(3, 1)).astype("float32"),
      "d1_directions": self.directions,
      "d1_directional": rng.normal(size=(3, 1, 2)).astype("float32"),
    }

  def _call(self, y=None, sample_weight=None, **options):
    objective = objective_lib.SobolevObjective(
      order=1, balance="none", **options
    )
    return objective(
      self.model,
      self.x,
      self.y if y is None else y,
      sample_weight=sample_weight,
    )

  @parameterized.named_parameters(
    # Each raised IndexError, tf.errors.UnimplementedError or a ValueError
    # from tf.convert_to_tensor that named nothing.
    ("scalar_target", {"value": 1.0}, None, r"y\['value'\].*batch axis"),
    ("scalar_mask", {"value_mask": 1.0}, None, r"y\['value_mask'\]"),
    ("text_mask", {"value_mask": [["1"]] * 3}, None, r"y\['value_mask'\]"),
    ("ragged_target", {"value": [[1.0], [2.0], []]}, None, r"y\['value'\]"),
    (
      "no_directions",
      {
        "d1_directions": np.ones((3, 0, 2), "float32"),
        "d1_directional": np.ones((3, 1, 0), "float32"),
      },
      None,
      r"y\['d1_directions'\].*K >= 1",
    ),
    ("text_weight", {}, np.array(["1"] * 3), r"`sample_weight`"),
    # Was reshaped to [6] and reported as "batch size 6".
    ("weight_matrix", {}, np.ones((3, 2)), r"`sample_weight` of shape \[B\]"),
    ("text_weight_by_term", {}, {"d1": ["a"] * 3}, r"`sample_weight\['d1'\]`"),
    (
      "weight_keys_of_mixed_types",
      {},
      {None: 1, "grad": 1},
      r"`sample_weight`",
    ),
    ("keys_of_mixed_types", {None: 1, "grad": 1}, None, r"unknown target keys"),
  )
  def test_invalid_data_names_the_argument(self, change, weight, message):
    with self.assertRaisesRegex(ValueError, message):
      self._call({**self.y, **change}, sample_weight=weight)

  def _with_nonfinite_direction(self):
    y = dict(self.y, d1_directions=self.directions.copy())
    y["d1_directions"][1, 0, 1] = np.nan  # example 1, direction 0
    return y

  def test_nonfinite_directions_raise_naming_them(self):
    with self.assertRaisesRegex(ValueError, r"\['d1_directions'\] hold NaN"):
      self._call(self._with_nonfinite_direction())

  def test_nonfinite_directional_targets_are_named_by_their_key(self):
    y = dict(self.y, d1_directional=self.y["d1_directional"].copy())
    y["d1_directional"][0, 0, 0] = np.inf
    with self.assertRaisesRegex(ValueError, r"\['d1_directional'\] hold"):
      self._call(y)

  def test_nonfinite_directions_in_a_graph_mark_the_step(self):
    objective = objective_lib.SobolevObjective(order=1, balance="none")
    y = self._with_nonfinite_direction()

    @tf.function
    def step(x):
      losses = objective(self.model, x, y)
      return losses.finite, losses.targets_finite, losses.total

    finite, targets_finite, total = step(self.x)
    self.assertFalse(finite)
    self.assertFalse(targets_finite)
    self.assertTrue(np.isfinite(total))

  def test_drop_drops_examples_with_nonfinite_directions(self):
    # The total was NaN.
    dropped = self._call(
      self._with_nonfinite_direction(), nonfinite_targets="drop"
    )
    keep = [0, 2]
    kept = objective_lib.SobolevObjective(order=1, balance="none")(
      self.model, self.x[keep], {k: v[keep] for k, v in self.y.items()}
    )
    self.assertAllClose(dropped.total, kept.total)
    self.assertEqual(dropped.entries["d1"], 2 * 2)

  def test_missing_skips_derivatives_along_nonfinite_directions(self):
    missing = self._call(
      self._with_nonfinite_direction(), nonfinite_targets="missing"
    )
    mask = np.ones((3, 1, 2), "float32")
    mask[1, :, 0] = 0
    directions = self.directions.copy()
    directions[1, 0] = 0.0
    masked = self._call(
      dict(self.y, d1_directions=directions, d1_mask=mask),
      nonfinite_targets="missing",
    )
    self.assertAllClose(missing.total, masked.total)
    self.assertEqual(missing.entries["d1"], 3 * 2 - 1)


class DtypeAndSeedRegressionTest(tf.test.TestCase):
  """Bugs the properties found in the objective and estimators, fixed.

  Each input gives finite losses or a `ValueError` that names the argument.
  """

  def _assert_finite_or_value_error(self, call):
    try:
      losses = call()
    except ValueError:
      return
    self.assertTrue(np.isfinite(losses.total), losses.total)

  def test_half_precision_input(self):
    # The output is cast to float32 and the derivatives stay float16:
    # InvalidArgumentError in SobolevObjective._losses (AddV2).
    objective = objective_lib.SobolevObjective(order=1, balance="none")
    self._assert_finite_or_value_error(
      lambda: objective(
        lambda x: 2 * x,
        tf.ones([2, 1], tf.float16),
        {"value": np.ones((2, 1), "float16"), "d1": np.ones((2, 1, 1))},
      )
    )

  def test_input_of_another_dtype_than_the_model(self):
    # A float32 Keras model casts a float64 x; its derivatives are float64:
    # InvalidArgumentError in SobolevObjective._losses. `SobolevModel.fit`
    # on a float64 tf.data dataset fails the same way (TypeError).
    net, _ = _keras_net((2,), (1,))
    objective = objective_lib.SobolevObjective(order=1, balance="none")
    self._assert_finite_or_value_error(
      lambda: objective(
        net,
        np.ones((2, 2)),
        {"value": np.ones((2, 1)), "d1": np.ones((2, 1, 2))},
      )
    )

  def test_projected_targets_of_another_dtype(self):
    # InvalidArgumentError in projections.project_jacobian (matmul of the
    # float64 target with float32 directions).
    objective = objective_lib.SobolevObjective(
      order=1, mode="stochastic", balance="none"
    )
    self._assert_finite_or_value_error(
      lambda: objective(
        _mlp((2,), (1,), "float32"),
        np.ones((2, 2), "float32"),
        {"value": np.ones((2, 1)), "d1": np.ones((2, 1, 2))},
        seed=[0, 1],
      )
    )

  def test_seed_of_the_wrong_shape(self):
    # InvalidArgumentError from tf.random.stateless_normal.
    objective = objective_lib.SobolevObjective(order=1, mode="stochastic")
    with self.assertRaisesRegex(ValueError, r"`seed`"):
      objective(
        _mlp((2,), (1,), "float32"),
        np.ones((2, 2), "float32"),
        {"value": np.ones((2, 1)), "d1": np.ones((2, 1, 2))},
        seed=3,
      )


# Training.


@functools.cache
def _keras_net(in_shape: tuple, out_shape: tuple):
  """`(net, initial_weights)`, one small Keras MLP per shape."""
  keras.utils.set_random_seed(0)
  net = keras.Sequential(
    [
      keras.Input(in_shape),
      keras.layers.Flatten(),
      keras.layers.Dense(4, activation="tanh"),
      keras.layers.Dense(int(np.prod(out_shape, dtype=np.int64))),
      keras.layers.Reshape(out_shape),
    ]
  )
  return net, net.get_weights()


@dataclasses.dataclass
class _Fit:
  """One `fit` call: options, NumPy data, and how the data reach `fit`.

  Attributes:
    options: the `SobolevModel` options.
    in_shape: the input's non-batch shape.
    out_shape: the model's non-batch output shape.
    x: inputs.
    y: targets by data key.
    sample_weight: per-example weights, or `None`.
    source: `"numpy"` (arrays to `fit`) or `"dataset"` (one `tf.data`
      batch, past the in-memory checks).
    run_eagerly: how the step runs.
    failure: what is wrong with the data, or `""`.
    names: the names of which an error must mention one.
  """

  options: dict
  in_shape: tuple
  out_shape: tuple
  x: np.ndarray
  y: dict
  sample_weight: Optional[np.ndarray]
  source: str
  run_eagerly: bool
  failure: str = ""
  names: tuple = ()

  def fit(self, model):
    if self.source == "numpy":
      return model.fit(
        self.x,
        self.y,
        sample_weight=self.sample_weight,
        batch_size=max(len(self.x), 1),
        epochs=1,
        verbose=0,
      )
    data = (self.x, self.y)
    if self.sample_weight is not None:
      data += (self.sample_weight,)
    return model.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0)


def _fit_batch_mismatch(draw, fit):
  other = 2 if len(fit.x) == 1 else 1  # batch 1 would broadcast
  batch = draw(st.sampled_from([other, len(fit.x) + 1]))
  if fit.sample_weight is not None and draw(st.booleans()):
    fit.sample_weight = np.ones(batch, "float32")
    return ("sample_weight",)
  key = draw(st.sampled_from(sorted(fit.y)))
  fit.y[key] = np.ones((batch,) + fit.y[key].shape[1:], fit.y[key].dtype)
  return ("'y'", "y[")


def _fit_nonfinite_x(draw, fit):
  fit.x.reshape(-1)[draw(st.integers(0, fit.x.size - 1))] = np.nan
  return (" x ",)


def _fit_nonfinite_targets(draw, fit):
  key = draw(st.sampled_from(sorted(k for k in fit.y if "mask" not in k)))
  fit.y[key].reshape(-1)[0] = draw(st.sampled_from(_NONFINITE))
  return ("y[", "targets")


def _fit_empty(draw, fit):
  del draw
  fit.x = fit.x[:0]
  fit.y = {key: value[:0] for key, value in fit.y.items()}
  fit.sample_weight = None
  return (" x ",)


# Invalid data for `fit`: each returns the names of which the error must
# mention one.
_FIT_FAILURES = {
  "batch_mismatch": _fit_batch_mismatch,
  "nonfinite_x": _fit_nonfinite_x,
  "nonfinite_targets": _fit_nonfinite_targets,
  "empty": _fit_empty,
}


@st.composite
def _fit_calls(draw, failure: str = ""):
  """Valid data for `fit` (NaN targets only where dropped or missing)."""
  in_shape = draw(st.sampled_from([(2,), (1, 2)]))
  out_shape = draw(st.sampled_from([(), (2,)]))
  # Derivatives first: Hypothesis tries the first choices most.
  order = draw(st.sampled_from([1, 2, 0]))
  mode = draw(st.sampled_from(config_lib.MODES))
  policies = (
    ("raise",)
    if failure == "nonfinite_targets"
    else (config_lib.NONFINITE_POLICIES)
  )
  if mode == "stochastic":
    policies = tuple(p for p in policies if p != "missing")
  options = dict(
    order=order,
    mode=mode,
    nonfinite_targets=draw(st.sampled_from(policies)),
    balance=draw(st.sampled_from(config_lib.BALANCES)),
  )
  batch = draw(st.integers(1, 4))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  y = {}
  for k in range(order + 1):
    if k and draw(st.booleans()):
      count = draw(st.integers(1, 2))
      y[DIRECTIONS[k]] = rng.normal(size=(batch, count) + in_shape)
      shape = (batch,) + out_shape + (count,) + (in_shape if k == 2 else ())
      key = DIRECTIONAL[k]
    else:
      shape = (batch,) + out_shape + in_shape * k
      key = TERMS[k]
    y[key] = rng.normal(size=shape)
    if mode == "full" and draw(st.booleans()):
      y[MASKS[k]] = (rng.random(shape) < 0.8).astype("float32")
  source = draw(st.sampled_from(["numpy", "dataset"]))
  if failure == "empty":
    source = "numpy"
  # NumPy data become float32 in Keras; a dataset keeps its own dtype.
  dtype = draw(st.sampled_from(["float32", "float64"]))
  y = {key: value.astype(dtype) for key, value in y.items()}
  fit = _Fit(
    options=options,
    in_shape=in_shape,
    out_shape=out_shape,
    x=rng.normal(size=(batch,) + in_shape).astype(dtype),
    y=y,
    sample_weight=draw(
      st.sampled_from([None, rng.random(batch).astype("float32")])
    ),
    source=source,
    run_eagerly=draw(st.booleans()),
  )
  if options["nonfinite_targets"] != "raise" and not failure:
    for _ in range(draw(st.integers(0, 2))):
      key = draw(st.sampled_from(sorted(k for k in y if "mask" not in k)))
      flat = y[key].reshape(-1)
      flat[draw(st.integers(0, flat.size - 1))] = np.nan
  if failure:
    fit.failure = failure
    fit.names = _FIT_FAILURES[failure](draw, fit)
  return fit


class TrainingFuzzTest(tf.test.TestCase, parameterized.TestCase):
  def _record(self, fit):
    # What the examples cover: pytest --hypothesis-show-statistics.
    hypothesis.event("source", fit.source)
    hypothesis.event("run_eagerly", fit.run_eagerly)
    hypothesis.event(
      "NaN targets", any(np.isnan(v).any() for v in fit.y.values())
    )
    hypothesis.event("order", fit.options["order"])

  def _model(self, fit):
    net, initial = _keras_net(fit.in_shape, fit.out_shape)
    net.set_weights(initial)
    model = model_lib.SobolevModel(net, **fit.options)
    model.compile(
      optimizer=keras.optimizers.SGD(0.1), run_eagerly=fit.run_eagerly
    )
    return model, initial

  @_settings(max_examples=12)
  @hypothesis.given(_fit_calls())
  def test_valid_data_trains_to_finite_weights(self, fit):
    self._record(fit)
    model, _ = self._model(fit)
    history = fit.fit(model)
    self.assertTrue(
      np.all(np.isfinite(history.history["loss"])), history.history
    )
    for weight in model.model.get_weights():
      self.assertTrue(np.all(np.isfinite(weight)), weight)

  @parameterized.named_parameters((name, name) for name in _FIT_FAILURES)
  @_settings(max_examples=5)
  @hypothesis.given(data=st.data())
  def test_invalid_data_raises_and_keeps_the_weights(self, name, data):
    fit = data.draw(_fit_calls(name), label="fit")
    self._record(fit)
    model, initial = self._model(fit)
    with self.assertRaises(ValueError) as raised:
      fit.fit(model)
    self.assertTrue(
      _names_one_of(str(raised.exception), fit.names),
      f"{raised.exception!r} names none of {fit.names}",
    )
    for before, after in zip(initial, model.model.get_weights(), strict=True):
      self.assertAllEqual(before, after)
    self.assertEqual(int(model.optimizer.iterations), 0)

  @parameterized.parameters("drop", "missing")
  def test_dataset_with_nonfinite_directions(self, policy):
    # The step was skipped: "the loss is NaN or Inf".
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(4, 2, 2)).astype("float32")
    directions[1, 0, 0] = np.nan
    fit = _Fit(
      options=dict(order=1, nonfinite_targets=policy),
      in_shape=(2,),
      out_shape=(2,),
      x=rng.normal(size=(4, 2)).astype("float32"),
      y={
        "value": rng.normal(size=(4, 2)).astype("float32"),
        "d1_directions": directions,
        "d1_directional": rng.normal(size=(4, 2, 2)).astype("float32"),
      },
      sample_weight=None,
      source="dataset",
      run_eagerly=False,
    )
    model, initial = self._model(fit)
    history = fit.fit(model)
    # 4 examples x 2 outputs x 2 directions, less example 1 or its first
    # direction.
    expected = {"drop": 12, "missing": 14}[policy]
    self.assertEqual(history.history["d1_entries"], [expected])
    self.assertNotAllClose(model.model.get_weights()[0], initial[0])


if __name__ == "__main__":
  tf.test.main()
