"""Test stand-in for the `grouped_gemm` package (github.com/fanshiqing/grouped_gemm), for machines
without it. NOT grouped_gemm: nanotron.nn.moe imports `grouped_gemm.ops` at module level and raises
without it, and every nanotron model imports nanotron.nn.moe (through nanotron.scaling.parametrization).
Only MoE layers call these ops; they are not provided here."""
