"""Tests for sobolev_tf.inputs: the differentiated inputs of a model."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from sobolev_tf import inputs as inputs_lib


class DerivativeInputsTest(tf.test.TestCase, parameterized.TestCase):
  def test_one_tensor_is_the_input(self):
    x = tf.ones([2, 3])
    selected, rebuild = inputs_lib.DerivativeInputs().split(x)
    self.assertIs(selected, x)
    self.assertIs(rebuild(x), x)

  def test_named_input_of_a_dict(self):
    batch = {"positions": tf.ones([2, 4, 3]), "types": tf.constant([[1], [2]])}
    selected, rebuild = inputs_lib.DerivativeInputs("positions").split(batch)
    self.assertIs(selected, batch["positions"])
    rebuilt = rebuild(tf.zeros([2, 4, 3]))
    self.assertAllEqual(rebuilt["positions"], tf.zeros([2, 4, 3]))
    self.assertIs(rebuilt["types"], batch["types"])

  def test_indexed_input_of_a_tuple(self):
    batch = (tf.ones([2, 1]), tf.ones([2, 5]))
    selected, rebuild = inputs_lib.DerivativeInputs(-1).split(batch)
    self.assertIs(selected, batch[1])
    rebuilt = rebuild(tf.zeros([2, 5]))
    self.assertIsInstance(rebuilt, tuple)
    self.assertIs(rebuilt[0], batch[0])

  def test_several_inputs_are_differentiated_as_one(self):
    batch = {"space": tf.ones([2, 2]), "time": 2 * tf.ones([2, 1])}
    names = inputs_lib.DerivativeInputs(["time", "space"])
    selected, rebuild = names.split(batch)
    self.assertAllEqual(selected, [[2, 1, 1], [2, 1, 1]])
    rebuilt = rebuild(tf.constant([[3.0, 4.0, 5.0]] * 2))
    self.assertAllEqual(rebuilt["time"], [[3.0]] * 2)
    self.assertAllEqual(rebuilt["space"], [[4.0, 5.0]] * 2)
    self.assertEqual(
      names.input_shape({"space": (None, 2), "time": (None, 1)}), [None, 3]
    )
    self.assertEqual(names.get_config(), ["time", "space"])

  @parameterized.named_parameters(
    ("dict_without_names", None, {"a": np.ones((2, 1))}, r"keyed \['a'\]"),
    ("names_for_a_tensor", "a", np.ones((2, 1)), "single tensor"),
    ("unknown_key", "b", {"a": np.ones((2, 1))}, r"naming 'b'"),
    ("key_for_a_tuple", "a", (np.ones((2, 1)),), "name them by index"),
    ("index_out_of_range", 2, (np.ones((2, 1)),), "tuple of 1"),
    (
      "several_of_rank_3",
      ["a", "b"],
      {"a": np.ones((2, 1, 1)), "b": np.ones((2, 1))},
      r"input 'a' of shape \(2, 1, 1\)",
    ),
    (
      "several_dtypes",
      ["a", "b"],
      {"a": np.ones((2, 1), "float32"), "b": np.ones((2, 1))},
      "share one dtype",
    ),
  )
  def test_errors_name_the_inputs(self, names, batch, message):
    with self.assertRaisesRegex(ValueError, message):
      inputs_lib.DerivativeInputs(names).split(batch)

  @parameterized.parameters(([],), (True,), (["a", "a"],), (1.5,), ([None],))
  def test_invalid_names(self, names):
    with self.assertRaisesRegex(ValueError, "derivative_inputs="):
      inputs_lib.DerivativeInputs(names)


class CheckModelTest(tf.test.TestCase):
  def test_refuses_what_is_not_one_output_per_example(self):
    with self.assertRaisesRegex(ValueError, "expected a Keras model"):
      inputs_lib.check_model(lambda x: x)
    inputs = keras.Input((2,))
    two = keras.Model(
      inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(1)(inputs)]
    )
    with self.assertRaisesRegex(ValueError, "several outputs"):
      inputs_lib.check_model(two)
    normed = keras.Sequential(
      [keras.Input((2,)), keras.layers.BatchNormalization(name="bn")]
    )
    with self.assertRaisesRegex(
      ValueError, r"BatchNormalization layers \['bn'\]"
    ):
      inputs_lib.check_model(normed)
    normed.layers[0].trainable = False
    inputs_lib.check_model(normed)


if __name__ == "__main__":
  tf.test.main()
