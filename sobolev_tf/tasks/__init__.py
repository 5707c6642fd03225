"""Experiment tasks: the paper's benchmark functions, Atari distillation and synthetic gradients."""
