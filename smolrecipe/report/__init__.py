"""What people read: the preflight before a run, and after it the loss curves, eval points, plots and report.md."""
