"""Runs the README's Python examples, so that they stay true."""

import os
import re

import numpy as np
import tensorflow as tf

_README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _examples() -> list:
  with open(_README, encoding="utf-8") as f:
    return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def _namespace() -> dict:
  """The arrays the examples name: f(x) = sin(x0) cos(x1) on [-2, 2]^2."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-2, 2, (64, 2)).astype("float32")
  s0, c0, s1, c1 = (
    np.sin(x[:, 0]),
    np.cos(x[:, 0]),
    np.sin(x[:, 1]),
    np.cos(x[:, 1]),
  )
  value = (s0 * c1)[:, None]
  gradient = np.stack([c0 * c1, -s0 * s1], -1)[:, None]  # [B, 1, 2]
  unknown = gradient.copy()
  unknown[::2, 0, 1] = np.nan  # The adjoint gives df/dx1 for half the points.
  tangents = rng.normal(size=(64, 3, 2)).astype("float32")  # [B, K, in]
  # A force field: E(r, z) = |r|^2 / 2 + z, so the forces are -r.
  positions = rng.normal(size=(64, 3)).astype("float32")
  types = rng.integers(0, 4, (64, 1)).astype("int32")
  return {
    "r": positions,
    "z": types,
    "energy": 0.5 * np.sum(positions**2, 1, keepdims=True) + types,
    "forces": -positions,
    "x": x,
    "f_x": value,
    "grad_f_x": gradient,
    "y": value,
    "d1": unknown.astype("float32"),
    "v": tangents,
    "jv": np.einsum("boi,bki->bok", gradient, tangents).astype("float32"),
  }


class ReadmeTest(tf.test.TestCase):
  def test_examples_run(self):
    examples = _examples()
    # Quick start, missing partials, directions, multi-input, custom loop.
    self.assertLen(examples, 5)
    namespace = _namespace()
    os.chdir(self.get_temp_dir())
    for example in examples:
      exec(example, namespace)  # noqa: S102
      if "model" in namespace and "net" in namespace:
        self.assertIs(namespace["model"].model, namespace["net"])
    self.assertTrue(os.path.exists("model.keras"))
    # The custom loop applied its step and logged every term.
    self.assertEqual(int(namespace["optimizer"].iterations.numpy()), 1)
    self.assertContainsSubset(
      ["loss", "value_loss", "d1_loss", "d1_normalized_loss"],
      namespace["logs"].keys(),
    )


if __name__ == "__main__":
  tf.test.main()
