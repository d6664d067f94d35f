"""The local backend: the recipe's model in transformers, trained by the HF Trainer (the CPU rehearsal)."""
