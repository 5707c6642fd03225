"""Property-based tests of the Sobolev objective's input validation.

Issue 13: every input either trains to finite weights or raises a
`ValueError` that names the argument involved. Hypothesis draws
configurations (valid and invalid options), targets (right or perturbed
shapes, dtypes, NaN/Inf placements, masks, sample weights) and small
training runs. Examples are derandomised, so CI sees the same ones on
every run; a failure prints the example and its `@reproduce_failure` blob.
"""

from absl.testing import parameterized
import hypothesis
from hypothesis import strategies as st
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import config as config_lib
from sobolev_tf import targets as targets_lib
from sobolev_tf import testing

testing.configure_logical_cpus(2)

TERMS = config_lib.TERMS
DIRECTIONS = targets_lib.DIRECTIONS
DIRECTIONAL = targets_lib.DIRECTIONAL
MASKS = targets_lib.MASKS


def _settings(max_examples: int) -> hypothesis.settings:
  # Derandomised and without an example database: the same examples on
  # every run and machine, and no `.hypothesis` directory in the checkout.
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


def _per_term_invalid(
  order: int, values: st.SearchStrategy, invalid: st.SearchStrategy
) -> st.SearchStrategy:
  """Per-term options that are wrong whatever the rest of the config."""
  keys = TERMS[: order + 1]
  size = order + 1
  wrong_lengths = [n for n in range(5) if n != size]
  # Keys of mixed types too: sorting them for a message must not fail.
  unknown_keys = st.sampled_from(
    [("grad",), ("d3",), ("value_mask",), (1,), (None, "grad"), (1, "d3")]
    + [(key,) for key in TERMS[order + 1 :]]
  )
  return st.one_of(
    invalid,
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
    config_lib.sum_squared_error,
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
  }[name]


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
    "loss_weights": _per_term_invalid(order, _WEIGHT, _BAD_WEIGHT),
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
  @_settings(max_examples=1000)
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


if __name__ == "__main__":
  tf.test.main()
