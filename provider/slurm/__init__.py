"""Slurm as a second scheduler behind the Service: a cluster that is a view of a partition."""
