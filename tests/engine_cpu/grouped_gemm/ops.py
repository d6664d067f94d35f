"""Test stand-in for grouped_gemm.ops: the names nanotron.nn.moe uses, raising when called."""


def _not_provided(name):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"test stand-in: grouped_gemm.ops.{name} not provided (MoE is not stood in)")

    stub.__name__ = name
    return stub


gmm = _not_provided("gmm")
permute = _not_provided("permute")
unpermute = _not_provided("unpermute")
