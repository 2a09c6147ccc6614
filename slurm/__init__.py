"""Boundary to the Slurm cluster: command execution and output parsing."""
