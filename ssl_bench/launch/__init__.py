"""The launch layer: the command line, sweeps of runs, and SLURM submission."""
