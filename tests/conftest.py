"""pytest set-up: two logical CPUs, so distribution tests run on one host."""

from sobolev_tf import testing

testing.configure_logical_cpus(2)
