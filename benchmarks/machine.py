"""The one owner of the ``device`` name in every benchmark record.

Why: the machine behind ``cpu-2core`` changed within a day (2026-12-02: an Intel Xeon with AMX,
bf16 matmul ~3 TFLOP/s, became an AMD EPYC without AMX, ~0.68 TFLOP/s), and records that said
only ``cpu-2core`` could not tell the two apart.  On a CPU the model name and the AMX flag decide
the bf16 peak, so both go into the name: ``cpu-2core-amd-epyc``,
``cpu-2core-intel-xeon-platinum-8480-amx``; on a GPU the GPU's model (``h100``).  On 2026-12-03 a
third machine came: an AMD EPYC of the same model name without any bf16 unit (Zen 2: AVX2, no
AVX-512), where the product computes in float32; ``-no-bf16`` tells it apart
(``cpu-2core-amd-epyc-no-bf16``).

The scripts import this file as ``import machine`` (``benchmarks/`` is on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CPUINFO = Path("/proc/cpuinfo")
#: Words of a CPU's model name that say nothing about its speed.
NOISE = frozenset({"r", "tm", "cpu", "processor", "with", "core"})
#: At most this many words of the model name go into the slug.
MAX_WORDS = 4


def _cpuinfo_field(name: str) -> str:
    """The first ``name : value`` line's value in /proc/cpuinfo, or "" (no such file or line)."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's ``model name``, else ``platform.processor()``, else "")."""
    return _cpuinfo_field("model name") or platform.processor().strip()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (``amx_bf16`` ...); empty where there is none."""
    return set(_cpuinfo_field("flags").split())


def cpu_slug(model_name: str, flags: set[str]) -> str:
    """The model name as a short slug, ``-amx`` added where the CPU has AMX and ``-no-bf16`` where it
    has neither AMX nor AVX-512 BF16 (they set the bf16 peak, and with it the dtype the product runs).

    ``Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz`` -> ``intel-xeon-platinum-8480``; the trademark
    marks, the clock speed, the core count and the words of ``NOISE`` go, at most ``MAX_WORDS`` stay.
    "" when no word is left (AMX is then still told: ``amx``)."""
    text = model_name.lower()
    text = re.sub(r"\((?:r|tm)\)", " ", text)  # Intel(R), Core(TM)
    text = re.sub(r"\d+(?:\.\d+)?\s*[gm]hz\b", " ", text)  # 2.00GHz: the base clock, not the model
    text = re.sub(r"\b\d+-core\b", " ", text)  # AMD's "64-Core Processor": the count, not the model
    words = [w for w in re.findall(r"[a-z0-9]+", text) if w not in NOISE][:MAX_WORDS]
    words += ["amx"] if "amx_bf16" in flags else [] if "avx512_bf16" in flags else ["no", "bf16"]
    return "-".join(words)


def gpu_slug(name: str) -> str:
    """The GPU's model from its name: ``NVIDIA H100 80GB HBM3`` -> ``h100``."""
    words = re.findall(r"[a-z0-9]+", name.lower())
    words = [w for w in words if w not in ("nvidia", "geforce", "tesla")]
    model = [w for w in words if re.fullmatch(r"[a-z]+\d+[a-z]*", w)]
    return model[0] if model else "-".join(words[:3]) or "gpu"


def device_name(device: torch.device | str = "cpu") -> str:
    """The records' ``device``: ``cpu-<N>core-<cpu slug>`` (``cpu-2core-amd-epyc``), or ``cpu-<N>core``
    when the CPU's model is not known; on a GPU its model (``h100``).  The CPU's model and AMX go
    into the name because the machine behind one ``cpu-2core`` changed and its bf16 peak with it."""
    if str(device).split(":")[0] == "cpu":
        slug = cpu_slug(cpu_model(), cpu_flags())
        return f"cpu-{os.cpu_count()}core" + (f"-{slug}" if slug else "")
    import torch

    return gpu_slug(torch.cuda.get_device_name(device))
