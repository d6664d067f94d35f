"""Sweeps: small variants of a recipe, trained to forecast a larger scale (scaling laws) or to choose a data mixture (mixing laws)."""
