"""Device set-up for tests and for trying strategies on one CPU."""

import functools

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


@functools.cache
def mirrored_strategy() -> tf.distribute.MirroredStrategy:
  """One `MirroredStrategy` over the first two logical CPUs, per process.

  Tests share it: several `MirroredStrategy` objects in one process reuse
  collective instance keys and abort with "Shape mismatch in the collective
  instance".
  """
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
