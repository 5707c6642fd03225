"""Tests for sobolev_tf.projections."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from sobolev_tf import derivatives
from sobolev_tf import projections
from sobolev_tf import testing
from sobolev_tf.testing import derivative_cases as cases

testing.configure_logical_cpus(2)


class ProjectedDerivativesTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(*cases.SHAPE_CASES)
  def test_vector_jacobian_product_projects_jacobian(self, in_shape, out_shape):
    fn, reference = cases.analytic_case(in_shape, out_shape)
    x = cases.inputs(in_shape)
    v1 = cases.directions((3, *out_shape))

    product = projections.vector_jacobian_product(fn, x, v1)

    self.assertEqual(product.shape, x.shape)
    expected = projections.project_jacobian(
      derivatives.jacobian(fn, x, "reverse"), v1
    )
    self.assertAllClose(
      product, expected, atol=cases.ROUND_OFF, rtol=cases.ROUND_OFF
    )
    analytic = np.einsum(
      "bo,boi->bi",
      v1.numpy().reshape(3, -1),
      reference(x.numpy())[1].reshape(3, cases.size(out_shape), -1),
    )
    self.assertAllClose(
      product,
      analytic.reshape(x.shape),
      atol=cases.ROUND_OFF,
      rtol=cases.ROUND_OFF,
    )

  @parameterized.named_parameters(*cases.SHAPE_CASES)
  def test_projected_hessian_projects_hessian(self, in_shape, out_shape):
    fn, reference = cases.analytic_case(in_shape, out_shape)
    x = cases.inputs(in_shape)
    v1 = cases.directions((3, *out_shape), seed=1)
    v2 = cases.directions((3, *in_shape), seed=2)

    product = projections.projected_hessian(fn, x, v1, v2)

    self.assertEqual(product.shape, x.shape)
    expected = projections.project_hessian(
      derivatives.hessian(fn, x, "reverse"), v1, v2
    )
    self.assertAllClose(
      product, expected, atol=cases.ROUND_OFF, rtol=cases.ROUND_OFF
    )
    in_size = cases.size(in_shape)
    analytic = np.einsum(
      "bo,boij,bi->bj",
      v1.numpy().reshape(3, -1),
      reference(x.numpy())[2].reshape(3, -1, in_size, in_size),
      v2.numpy().reshape(3, -1),
    )
    self.assertAllClose(
      product,
      analytic.reshape(x.shape),
      atol=cases.ROUND_OFF,
      rtol=cases.ROUND_OFF,
    )

  @parameterized.product(
    shapes=[((3,), (2,)), ((2, 3), (2, 2))], jit_compile=[False, True]
  )
  def test_projecting_arrays_matches_einsum(self, shapes, jit_compile):
    in_shape, out_shape = shapes
    in_size, out_size, batch = cases.size(in_shape), cases.size(out_shape), 4
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(batch, *out_shape, *in_shape))
    hessian = rng.normal(size=(batch, *out_shape, *in_shape, *in_shape))
    v1 = rng.normal(size=(batch, *out_shape))
    v2 = rng.normal(size=(batch, *in_shape))

    def project(jacobian, hessian, v1, v2):
      return (
        projections.project_jacobian(jacobian, v1),
        projections.project_hessian(hessian, v1, v2),
      )

    if jit_compile:
      project = tf.function(project, jit_compile=True)
    first, second = project(jacobian, hessian, v1, v2)

    flat_v1, flat_v2 = v1.reshape(batch, -1), v2.reshape(batch, -1)
    expected_first = np.einsum(
      "bo,boi->bi", flat_v1, jacobian.reshape(batch, out_size, in_size)
    )
    expected_second = np.einsum(
      "bo,boij,bi->bj",
      flat_v1,
      hessian.reshape(batch, out_size, in_size, in_size),
      flat_v2,
    )
    self.assertEqual(first.shape, (batch, *in_shape))
    self.assertEqual(second.shape, (batch, *in_shape))
    self.assertAllClose(first, expected_first.reshape(first.shape))
    self.assertAllClose(second, expected_second.reshape(second.shape))

  @parameterized.parameters(True, False)
  def test_several_directions_equal_single_direction_calls(self, second):
    fn, _ = cases.analytic_case((2, 3), (2, 2))
    x = cases.inputs((2, 3))
    num_directions = 3
    v1s = [cases.directions((3, 2, 2), seed=p) for p in range(num_directions)]
    v2s = [
      cases.directions((3, 2, 3), seed=10 + p) for p in range(num_directions)
    ]

    y, first, second_order = projections.value_and_projected_derivatives(
      fn, x, v1s, v2s if second else None
    )

    self.assertAllClose(y, fn(x), atol=0)
    self.assertLen(first, num_directions)
    self.assertLen(second_order, num_directions if second else 0)
    for p in range(num_directions):
      self.assertAllClose(
        first[p],
        projections.vector_jacobian_product(fn, x, v1s[p]),
        atol=cases.ROUND_OFF,
      )
      if second:
        self.assertAllClose(
          second_order[p],
          projections.projected_hessian(fn, x, v1s[p], v2s[p]),
          atol=cases.ROUND_OFF,
        )

  def test_sampler_draws_directions_after_the_forward_pass(self):
    fn, _ = cases.analytic_case((3,), (2,))
    x = cases.inputs((3,))
    seed = tf.constant([5, 6])
    seen = []

    def sample(y):
      seen.append(y)
      v1 = projections.sample_directions(2, y, seed)
      v2 = projections.sample_directions(2, x, seed)
      return tf.unstack(v1), tf.unstack(v2)

    y, first, second, (v1s, v2s) = (
      projections.projected_derivatives_with_sampler(fn, x, sample)
    )

    self.assertLen(seen, 1)
    self.assertAllClose(seen[0], y, atol=0)
    self.assertAllClose(y, fn(x), atol=0)
    self.assertLen(v1s, 2)
    self.assertLen(v2s, 2)
    expected = projections.value_and_projected_derivatives(fn, x, v1s, v2s)
    self.assertAllClose(first, expected[1], atol=cases.ROUND_OFF)
    self.assertAllClose(second, expected[2], atol=cases.ROUND_OFF)


class SampleDirectionsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.product(event_shape=[(3,), (2, 3)], dtype=cases.DTYPES)
  def test_shape_dtype_and_unit_norm(self, event_shape, dtype):
    like = tf.zeros((4, *event_shape), dtype)
    directions = projections.sample_directions(5, like, tf.constant([1, 2]))

    self.assertEqual(directions.shape, (5, 4, *event_shape))
    self.assertEqual(directions.dtype, dtype)
    event_axes = list(range(2, 2 + len(event_shape)))
    norms = tf.sqrt(tf.reduce_sum(tf.square(directions), event_axes))
    # Normalising is a handful of roundings of unit-size numbers.
    self.assertAllClose(
      norms,
      tf.ones([5, 4], dtype),
      atol=10 * np.finfo(dtype.as_numpy_dtype).eps,
    )

  def test_same_seed_same_directions_other_seed_other_directions(self):
    like = tf.zeros((4, 3))
    first = projections.sample_directions(2, like, tf.constant([1, 2]))
    again = projections.sample_directions(2, like, tf.constant([1, 2]))
    other = projections.sample_directions(2, like, tf.constant([1, 3]))

    self.assertAllEqual(first, again)
    self.assertNotAllClose(first, other)

  def test_eager_and_tf_function_agree(self):
    like = tf.zeros((4, 2, 3), tf.float64)
    seed = tf.constant([7, 8])
    sample = tf.function(
      lambda seed: projections.sample_directions(3, like, seed)
    )
    self.assertAllEqual(
      sample(seed), projections.sample_directions(3, like, seed)
    )

  def test_xla_is_deterministic_and_unit_norm(self):
    like = tf.zeros((4, 3), tf.float64)
    sample = tf.function(
      lambda seed: projections.sample_directions(3, like, seed),
      jit_compile=True,
    )
    directions = sample(tf.constant([7, 8]))

    self.assertAllEqual(directions, sample(tf.constant([7, 8])))
    self.assertAllClose(
      tf.norm(directions, axis=-1), tf.ones([3, 4], tf.float64), atol=1e-14
    )

  @parameterized.parameters(False, True)
  def test_uniform_on_the_sphere(self, jit_compile):
    num_directions, dimension = 4000, 3
    like = tf.zeros((1, dimension), tf.float64)
    sample = projections.sample_directions
    if jit_compile:  # XLA draws with another algorithm (Threefry).
      sample = tf.function(sample, jit_compile=True)
    directions = sample(num_directions, like, tf.constant([3, 4]))[:, 0].numpy()

    # Each coordinate of a uniform unit vector in R^3 has mean 0 and variance
    # 1/3, so the sample mean's standard deviation is sqrt(1 / (3 * 4000)) ~
    # 0.009: 0.05 is more than five of them. The second moment E[u u^T] is
    # I / 3; its entries' estimates have standard deviations below 0.01.
    self.assertAllClose(
      directions.mean(0), np.zeros(dimension), atol=0.05, rtol=0
    )
    self.assertAllClose(
      directions.T @ directions / num_directions,
      np.eye(dimension) / dimension,
      atol=0.05,
      rtol=0,
    )


if __name__ == "__main__":
  tf.test.main()
