"""Evaluation: suites on a checkpoint through lighteval (tasks, perplexity, tier-4 checks) -> results JSON; samples."""
