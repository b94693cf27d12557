"""``benchmarks/machine.py``: the records' device name tells a CPU's model and AMX apart, because the
machine behind one ``cpu-2core`` changed (Xeon with AMX -> EPYC without) and its bf16 peak with it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.benchmark_scripts import load_script

machine = load_script("machine")


@pytest.mark.parametrize(("model_name", "slug"), [
    ("AMD EPYC", "amd-epyc"),
    ("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", "intel-xeon-platinum-8480"),
    ("Intel(R) Xeon(R) CPU @ 2.20GHz", "intel-xeon"),
    ("AMD EPYC 7763 64-Core Processor", "amd-epyc-7763"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "intel-i7-8700"),
    ("AMD Ryzen 9 7950X 16-Core Processor with Radeon Graphics", "amd-ryzen-9-7950x"),  # capped at 4 words
    ("", ""),
])
def test_the_slug_keeps_the_model_words_only(model_name, slug):
    assert machine.cpu_slug(model_name, {"avx512f", "avx512_bf16"}) == slug


def test_amx_is_told_because_it_sets_the_bf16_peak():
    xeon = "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz"
    assert machine.cpu_slug(xeon, {"avx512f", "amx_bf16", "amx_tile"}) == "intel-xeon-platinum-8480-amx"
    assert machine.cpu_slug(xeon, {"avx512f", "amx_tile", "avx512_bf16"}) == "intel-xeon-platinum-8480"


def test_a_cpu_without_bf16_units_is_told_because_the_product_runs_float32_there():
    assert machine.cpu_slug("AMD EPYC", {"avx2", "fma"}) == "amd-epyc-no-bf16"
    assert machine.cpu_slug("AMD EPYC", {"avx2", "avx512f", "avx512_bf16"}) == "amd-epyc"


def test_the_cpu_model_is_the_cpuinfo_model_name():
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == "model name"]
    if not names:
        pytest.skip("no model name in /proc/cpuinfo here")
    assert machine.cpu_model() == names[0]


def test_this_machine_is_named_by_its_cores_model_and_bf16_units():
    name = machine.device_name()
    assert name.startswith(f"cpu-{os.cpu_count()}core")
    assert name == machine.device_name(torch.device("cpu")) == machine.device_name("cpu")
    model_slug = machine.cpu_slug(machine.cpu_model(), {"avx512_bf16"})
    if model_slug:
        assert name.startswith(f"cpu-{os.cpu_count()}core-{model_slug}")
    else:
        assert name in tuple(f"cpu-{os.cpu_count()}core{tail}" for tail in ("", "-amx", "-no-bf16"))
    flags = machine.cpu_flags()
    assert name.endswith("-amx") == ("amx_bf16" in flags)
    assert name.endswith("-no-bf16") == (not {"amx_bf16", "avx512_bf16"} & flags)


def test_a_gpu_is_named_by_its_model():
    assert machine.gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert machine.gpu_slug("NVIDIA GeForce RTX 4090") == "rtx-4090"
    assert machine.gpu_slug("NVIDIA H200") == "h200"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_a_cuda_device_is_named_by_its_gpu():
    assert machine.device_name(torch.device("cuda")) == machine.gpu_slug(torch.cuda.get_device_name(0))
