"""absl-flag launchers for the experiments."""
