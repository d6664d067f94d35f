"""Data: sources -> datatrove pipelines -> nanoset folders, chat records, the tokenizer folder, and the batches both backends train on."""
