"""Sobolev Training for neural networks in TensorFlow 2, Keras 3 and Sonnet 2.

Czarnecki, Osindero, Jaderberg, Swirszcz and Pascanu, "Sobolev Training for
Neural Networks", NIPS 2017 (arXiv:1706.04859).
"""

from sobolev_tf import finite_differences
from sobolev_tf.balance import RunningLoss
from sobolev_tf.balance import TargetScale
from sobolev_tf.config import SobolevConfig
from sobolev_tf.derivatives import hessian
from sobolev_tf.derivatives import jacobian
from sobolev_tf.derivatives import value_and_derivatives
from sobolev_tf.derivatives import value_and_jacobian
from sobolev_tf.derivatives import value_and_jacobian_vector_products
from sobolev_tf.finite_updates import apply_if_finite
from sobolev_tf.model import SobolevModel
from sobolev_tf.objective import SobolevLosses
from sobolev_tf.objective import SobolevObjective
from sobolev_tf.objective import derivative_spread
from sobolev_tf.projections import hessian_vector_products
from sobolev_tf.projections import project_hessian
from sobolev_tf.projections import project_jacobian
from sobolev_tf.projections import projected_hessian
from sobolev_tf.projections import sample_directions
from sobolev_tf.projections import value_and_projected_derivatives
from sobolev_tf.projections import vector_jacobian_product

__version__ = "0.1.0"

__all__ = (
  "RunningLoss",
  "SobolevConfig",
  "SobolevLosses",
  "SobolevModel",
  "SobolevObjective",
  "TargetScale",
  "apply_if_finite",
  "derivative_spread",
  "finite_differences",
  "hessian",
  "hessian_vector_products",
  "jacobian",
  "project_hessian",
  "project_jacobian",
  "projected_hessian",
  "sample_directions",
  "value_and_derivatives",
  "value_and_jacobian",
  "value_and_jacobian_vector_products",
  "value_and_projected_derivatives",
  "vector_jacobian_product",
)
