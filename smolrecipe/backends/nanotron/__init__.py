"""The nanotron backend: config rendering and its schema check, our training entry point, checkpoint conversion, the job."""
