"""SLURM: the recipe's dependency chain of jobs, and what one stage's job runs."""
