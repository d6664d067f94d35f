"""Stopping a training job at a checkpoint when SLURM asks (preemption, or the time limit near).

The batch script (slurm/common.sh) is started with `--signal=B:USR1@<seconds>`: SLURM sends
SIGUSR1 to the batch shell that long before the limit, the shell forwards it to the training
process, which checkpoints and exits with PREEMPTED; the shell then requeues the job, and the
requeued job resumes from that checkpoint. Kept free of heavy imports: the handler is installed
first thing in a job, so a signal that arrives while torch loads is not lost.
"""

from __future__ import annotations

import signal

PREEMPTED = 75  # EX_TEMPFAIL: stopped early with a checkpoint; run the same job again to continue


class StopRequest:
    """Set by a signal; read by the training loop at the end of each step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self, signums: tuple[int, ...] = (signal.SIGUSR1,)) -> "StopRequest":
        for signum in signums:
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "none"
