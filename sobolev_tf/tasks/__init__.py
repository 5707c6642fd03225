"""Experiment tasks.

The paper's benchmark functions, Atari distillation and synthetic gradients.
"""
