"""Test suites for slurm-gateway."""
