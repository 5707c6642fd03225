"""Decoupled training with synthetic gradients (paper Sec. 4.3, Table 1).

The experiment's settings: a classifier is cut into stages at
`num_modules` split points (`split_points`), and every lower stage learns
from a synthetic gradient SG(h, y) ≈ ∂ℓ/∂h made at its output by the SG
module at that split. `decoupled.DecoupledClassifier` trains it; the
variants (`VARIANTS`) differ in the SG module and what it learns from:

* `backprop`: no splits, the ordinary gradient (the baseline).
* `noprop`: the lower stages never learn; only the top stage does.
* `direct`: SG = `DirectSG(h, y)`, regressed (L2) onto the gradient coming
  down from the stage above. As in decoupled neural interfaces, that is the
  true gradient at the top split and, below it, the stage above's own
  synthetic gradient carried back through that stage (`J^T SG_{i+1}`,
  bootstrapping).
* `vfbn`: SG = ∂m/∂h of a `ScalarCritic` m, supervised on the gradient only.
* `critic`: SG = ∂m/∂h of a `LossCritic` m = L(p(h), y), supervised on the
  loss value only: the true per-example loss at the top split, the critic
  above's prediction `m_{i+1}(h_{i+1}, y)` below it.
* `sobolev`: the same critic supervised on value and gradient.

`synthetic_gradients_task.SyntheticGradientsTask` is one run of the Table 1
sweep.
"""

import dataclasses
from typing import List
from typing import Tuple

from sobolev_tf import checks
from sobolev_tf import config as config_lib
from sobolev_tf.layers import synthetic_gradients as sg_layers

VARIANTS = ("backprop", "noprop", "direct", "vfbn", "critic", "sobolev")
ARCHITECTURES = ("convnet", "resnet50")


@dataclasses.dataclass(frozen=True)
class Config:
  """One decoupled-training run.

  Attributes:
    variant: one of `VARIANTS`.
    num_modules: number of split points (SG modules), at most the number of
      conv blocks (or ResNet-50's 4 block groups).
    architecture: `convnet` (`SplitConvNet` with `channels` and `strides`)
      or `resnet50` (`SplitResNet50`).
    num_classes: number of classes.
    channels: channels of the conv blocks.
    strides: strides of the conv blocks.
    batch_norm: batch normalisation in the conv blocks.
    learning_rate: Adam step size of the classifier.
    sg_learning_rate: Adam step size of the SG modules.
    gradient_weight: weight of the gradient terms of `direct`, `vfbn` and
      `sobolev`, on the mean squared error over h's elements; the value
      terms have weight 1.
    balance: the SG modules' objectives' balance (`SobolevConfig.balance`):
      with `target_scale` each term is relative to its targets (the loss,
      its gradient), so weight 1 needs no tuning per data set; `none` is
      the plain sum, whose gradient term needed a weight of 100 on digits.
    warmup_steps: steps the SG modules train before the lower stages use
      their output.
    balance_floor: `SobolevConfig.balance_floor` of the SG objectives.
  """

  variant: str
  num_modules: int = 3
  architecture: str = "convnet"
  num_classes: int = 10
  channels: Tuple[int, ...] = (32, 32, 64)
  strides: Tuple[int, ...] = (1, 1, 2)
  batch_norm: bool = False
  learning_rate: float = 1e-3
  sg_learning_rate: float = 1e-3
  gradient_weight: float = 1.0
  warmup_steps: int = 0
  balance: str = "target_scale"
  balance_floor: float = config_lib.SobolevConfig.balance_floor

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(
        f"Received an invalid value for `variant`, expected one of "
        f"{list(VARIANTS)}. Received: variant={self.variant!r}"
      )
    if self.balance not in config_lib.BALANCES:
      raise ValueError(
        f"Received an invalid value for `balance`, expected one of "
        f"{config_lib.BALANCES}. Received: balance={self.balance!r}"
      )
    if self.architecture not in ARCHITECTURES:
      raise ValueError(
        f"Received an invalid value for `architecture`, expected one of "
        f"{list(ARCHITECTURES)}. Received: architecture={self.architecture!r}"
      )
    checks.positive_ints(num_classes=self.num_classes)
    checks.non_negative_ints(warmup_steps=self.warmup_steps)
    checks.positive_numbers(
      learning_rate=self.learning_rate, sg_learning_rate=self.sg_learning_rate
    )
    checks.non_negative_numbers(
      gradient_weight=self.gradient_weight, balance_floor=self.balance_floor
    )
    if not 1 <= self.num_modules <= len(self.block_channels):
      raise ValueError(
        f"Received an invalid value for `num_modules`, expected 1 to "
        f"{len(self.block_channels)} (one split after each block at most). "
        f"Received: num_modules={self.num_modules}"
      )

  @property
  def block_channels(self) -> Tuple[int, ...]:
    """Output channels of each block of the network, before the head."""
    if self.architecture == "resnet50":
      return sg_layers.RESNET50_CHANNELS
    return tuple(self.channels)


def split_points(num_blocks: int, num_modules: int) -> List[int]:
  """Indices of the conv blocks after which the net is split.

  Three modules on three blocks split after every block; one module splits
  after the middle block (as the paper places one module in ResNet-50).
  """
  if num_modules == num_blocks:
    return list(range(num_blocks))
  step = num_blocks / (num_modules + 1)
  return sorted({max(0, round(step * (k + 1)) - 1) for k in range(num_modules)})
