"""Test-only shim: run nanotron's CUDA-only code paths on a CPU, in this process only.

nanotron hard-codes CUDA (device="cuda" buffers and factories, `.to("cuda")`, torch.cuda.* calls,
an NCCL process group). `install()`, meant for machines where torch.cuda.is_available() is False:

- places every tensor asked for on a CUDA device on the CPU instead (a TorchFunctionMode that
  rewrites `device=` arguments, `Tensor.to(<cuda>)` and `Tensor.cuda()`), so build_model,
  init_on_device_and_dtype, the rotary buffers, P2P, data moves and state_dict_to_device work;
- turns the torch.cuda calls nanotron makes on its training path into their no-GPU answers
  (set_device, current_device, synchronize, empty_cache, memory statistics);
- makes nanotron_timer's CUDA timers CPU timers from the start: without CUDA a CUDA timer turns
  itself into a CPU timer when started, and DistributedTrainer.train() then fails at its second
  step asking for "iteration_time" as a CUDA timer again ("already exists with different settings");
- makes nanotron.distributed.initialize_torch_distributed start a **gloo** group from torchrun's
  environment, and ParallelContext default to a single-process world when torchrun's variables are
  unset;
- lets the trainer's state_dict_to_device(optimizer state, "cuda") (first step after resuming with
  the optimizer) move states to the CPU: nanotron's asserts they end up on CUDA;
- runs nanotron's ReduceOp.AVG all-reduces under no_grad: gloo averages by an in-place division
  that autograd refuses on parameters (nanotron averages freshly initialised parameters across DP
  with it); NCCL averages natively.

Nothing of nanotron is edited: names are replaced on imported modules at run time. Importing this
module changes nothing; install() is idempotent and uninstall() puts everything back (for tests
that share a process).
"""

import os
import socket

import torch
from torch.overrides import TorchFunctionMode

_mode = None  # the active CudaOnCpu, while installed
_replaced = []  # (owner, name, original) for uninstall()
_env_set = []  # environment variables single_process_defaults() set, for uninstall()


def _is_cuda(device):
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int names a CUDA device (torch.cuda.current_device() returns one).
    return isinstance(device, int) and not isinstance(device, bool)


class CudaOnCpu(TorchFunctionMode):
    """Rewrites CUDA placements to the CPU in every torch call made while it is active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:  # .cuda(device=None, non_blocking=False, memory_format=...)
            kwargs.pop("device", None)
            return args[0].to("cpu", **kwargs)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_defaults():
    """torchrun's variables for a world of one, where they are unset (torchrun's own win)."""
    defaults = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": None}
    if "RANK" not in os.environ:
        defaults.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    for name, value in defaults.items():
        if name not in os.environ:
            os.environ[name] = value or str(_free_port())
            _env_set.append(name)


def initialize_torch_distributed():
    """nanotron.distributed.initialize_torch_distributed with gloo: the original raises
    NotImplementedError without CUDA (and would pick NCCL)."""
    import nanotron.distributed as dist

    single_process_defaults()
    dist.init_process_group(
        backend="gloo",
        init_method="env://",
        world_size=int(os.environ["WORLD_SIZE"]),
        rank=int(os.environ["RANK"]),
        timeout=dist.default_pg_timeout,
    )
    return True


def _all_reduce_avg_without_autograd(all_reduce):
    def wrapper(tensor, op=torch.distributed.ReduceOp.SUM, group=None, async_op=False):
        if op == torch.distributed.ReduceOp.AVG:
            with torch.no_grad():
                return all_reduce(tensor, op=op, group=group, async_op=async_op)
        return all_reduce(tensor, op=op, group=group, async_op=async_op)

    return wrapper


def _replace(owner, name, value):
    _replaced.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def _patch_cuda_calls():
    # nanotron calls these unconditionally; on a CPU-only torch build set_device, current_device,
    # synchronize and reset_peak_memory_stats raise (log_memory, run at each early training step,
    # calls the last). The memory statistics already answer 0 there; pinned for other builds.
    answers = {
        "set_device": None,
        "current_device": 0,
        "synchronize": None,
        "empty_cache": None,
        "reset_peak_memory_stats": None,
        "memory_allocated": 0,
        "memory_reserved": 0,
        "max_memory_allocated": 0,
        "max_memory_reserved": 0,
    }
    for name, answer in answers.items():
        _replace(torch.cuda, name, lambda *args, _answer=answer, **kwargs: _answer)


def _cpu_timers(call):
    from nanotron.logging.timers import TimerType

    def __call__(self, name, timer_type=TimerType.CUDA, *args, **kwargs):
        if timer_type in (TimerType.CUDA, "cuda"):
            timer_type = TimerType.CPU
        return call(self, name, timer_type, *args, **kwargs)

    return __call__


@torch.no_grad()
def state_dict_to_device(state_dict, device):
    """nanotron.serialize.optimizer.state_dict_to_device without its asserts (states on the CPU
    before, on CUDA after): the states are moved, i.e. stay on the CPU here."""
    for _, optim_state in sorted(state_dict["state"].items(), key=lambda x: x[0]):
        for name, tensor in optim_state.items():
            optim_state[name] = tensor.to(device)


def _patch_nanotron():
    import sys

    import nanotron.distributed
    import nanotron.serialize.optimizer
    from nanotron.logging.timers import Timers
    from nanotron.parallel.context import ParallelContext

    _replace(Timers, "__call__", _cpu_timers(Timers.__call__))
    # nanotron.trainer binds the name at its import: patch it there too when it is already imported.
    for module in (nanotron.serialize.optimizer, sys.modules.get("nanotron.trainer")):
        if module is not None:
            _replace(module, "state_dict_to_device", state_dict_to_device)

    _replace(nanotron.distributed, "initialize_torch_distributed", initialize_torch_distributed)
    # nanotron modules call `dist.all_reduce` on `from nanotron import distributed as dist`.
    _replace(nanotron.distributed, "all_reduce", _all_reduce_avg_without_autograd(nanotron.distributed.all_reduce))
    original_init = ParallelContext.__init__

    # ParallelContext reads WORLD_SIZE/RANK/LOCAL_RANK from the environment before it starts the
    # process group, so a plain `python` run needs the single-process defaults first. Its
    # `backend == "nccl"` assert only checks its own argument default; the group it makes
    # follows dist.get_backend(), i.e. gloo here.
    def __init__(self, *args, **kwargs):
        single_process_defaults()
        original_init(self, *args, **kwargs)

    _replace(ParallelContext, "__init__", __init__)


def install():
    """Activate the shim (no-op when called again). nanotron must be importable."""
    global _mode
    if _mode is not None:
        return
    _patch_cuda_calls()
    _patch_nanotron()
    # Entered until uninstall(): torch function modes live on a thread-local stack; the thread that
    # installs (the main thread, where nanotron builds and trains) keeps this one.
    _mode = CudaOnCpu()
    _mode.__enter__()


def installed():
    return _mode is not None


def uninstall():
    """Undo install() (call from the thread that installed, with no mode entered since)."""
    global _mode
    if _mode is None:
        return
    _mode.__exit__(None, None, None)
    _mode = None
    while _replaced:
        owner, name, original = _replaced.pop()
        setattr(owner, name, original)
    while _env_set:
        os.environ.pop(_env_set.pop(), None)
