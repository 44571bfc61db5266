"""A real one-node SLURM for the cluster tests, and the runs they compare."""
