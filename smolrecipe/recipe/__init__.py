"""The recipe: its schema (stages as kinds), loading with one-line errors, and the plan of every number derived from it."""
