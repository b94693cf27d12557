"""The dtype the LLM computes in (``llm_dtype``), decided once for loading and cache keys.

``auto`` is bfloat16 where the device has bf16 matmul units (a bf16 matmul runs 5-7x float32
on this project's AMX CPUs) and float32 elsewhere; what trains (soft prompt, adapters) stays
float32 whatever the weights' dtype.
"""

from __future__ import annotations

from logging import getLogger
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def llm_dtype(name: str, device: torch.device | str | None = None) -> torch.dtype:
    """The dtype of ``llm_dtype``; ``auto`` is bfloat16 where ``device`` computes it fast
    (a CUDA GPU with bf16, a CPU with AMX or AVX-512 BF16), float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if fast_bfloat16(torch.device(device or "cpu")) else torch.float32
    if name not in DTYPES:
        raise ValueError(f"llm_dtype '{name}' is not one of {sorted(DTYPES) + ['auto']}.")
    return DTYPES[name]


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 matmul units (on this project's CPUs bf16 runs ~5x float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # emulated bf16 is slow
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def warn_if_emulated(dtype: torch.dtype, device: torch.device | str | None = None) -> None:
    """A warning where the LLM would compute in bfloat16 without bf16 units: emulated bf16 matmuls
    ran 50-480x slower than float32 on a CPU without AMX or AVX-512 BF16 (``BENCHMARKS.md``), so
    a forced ``llm_dtype: bfloat16`` there turns an hour's run into days."""
    device = torch.device(device or "cpu")
    if dtype == torch.bfloat16 and not fast_bfloat16(device):
        getLogger().warning(f"llm_dtype bfloat16 on {device}, which has no bf16 matmul units: bf16 is emulated there "
                            "(50-480x slower than float32 on such a CPU); llm_dtype: auto computes in float32 here")


def dtype_name(name: str, device: torch.device | str | None = None) -> str:
    """:func:`llm_dtype` as its name (``auto`` resolved): what a cache key records."""
    return str(llm_dtype(name, device)).removeprefix("torch.")
