"""Test-only start-up hook, active in processes started with tests/engine_cpu on PYTHONPATH
(e.g. the ranks torchrun starts for CPU tests of nanotron).

Being on the path makes the stand-in `flash_attn` (and `grouped_gemm`) packages next to this file
importable; this hook moves the folder to the end of sys.path so that real installed ones win.
On top of that, the first time `nanotron` is imported, and only if torch sees no CUDA device,
cpu_placement.install() runs, so nanotron's CUDA-only code runs on the CPU (gloo process group).
On a GPU machine without flash-attn only the kernels are stood in. Nothing is imported at start-up
(not even torch), so processes that never import nanotron pay nothing.
"""

import os
import sys

# Stand-ins only where the real packages are absent: move this folder from the front of the path
# (where PYTHONPATH puts it) to the end, so an installed flash_attn or grouped_gemm wins.
_here = os.path.dirname(os.path.abspath(__file__))
_ours = [p for p in sys.path if p and os.path.abspath(p) == _here]
if _ours:
    sys.path[:] = [p for p in sys.path if p not in _ours] + [_here]


def _install_if_no_gpu():
    try:
        import torch

        if torch.cuda.is_available():
            return
        import cpu_placement

        cpu_placement.install()
    except Exception as exc:  # never break the interpreter; say why the shim is off
        print(f"[tests/engine_cpu sitecustomize] CPU placement shim not installed: {exc!r}", file=sys.stderr)


class _InstallAfterNanotronImport:
    """Meta-path finder that, once, lets `nanotron` import normally and then calls the shim."""

    def find_spec(self, name, path=None, target=None):
        if name != "nanotron":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            _install_if_no_gpu()

        spec.loader.exec_module = exec_then_install
        return spec


if "nanotron" in sys.modules:  # imported before us (unusual): install now
    _install_if_no_gpu()
else:
    sys.meta_path.insert(0, _InstallAfterNanotronImport())
