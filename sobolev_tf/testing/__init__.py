"""Test helpers shared by the test files: device set-up and fakes."""

import tensorflow as tf


def configure_logical_cpus(count: int = 2) -> None:
  """Splits the physical CPU into `count` logical devices.

  Lets `tf.distribute.MirroredStrategy` run on several replicas without
  accelerators. It must run before TensorFlow initialises its devices, so
  test modules call it at import time; a later call is a no-op when the
  devices are already what is asked for.

  Args:
    count: number of logical CPU devices wanted.

  Raises:
    RuntimeError: if TensorFlow's devices were initialised with another
      number of logical CPUs.
  """
  physical = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
      physical[0], [tf.config.LogicalDeviceConfiguration()] * count
    )
  except RuntimeError:
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) != count:
      raise RuntimeError(
        f"TensorFlow already runs on {len(logical)} logical CPUs; "
        f"{count} were asked for. Call configure_logical_cpus before "
        "any TensorFlow op runs."
      ) from None
