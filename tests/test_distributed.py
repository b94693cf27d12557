"""DELRec under RecBole's distributed mode: two gloo processes on the CPU, a tiny model."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole_delrec import distributed, run_delrec
from recbole_delrec.config import hidden_command_line
from recbole_delrec.runs.folder import RunDirectory
from tests.conftest import tiny_dict


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return str(sock.getsockname()[1])


def test_two_gloo_processes_train_and_test_delrec_like_one_process(tmp_path):
    values = tiny_dict(tmp_path, epochs=3, train_prefixes_per_user=2)
    with hidden_command_line():
        single = run_delrec(config_dict=values)
        two = run_delrec(config_dict=values, nproc=2, port=_free_port())
    assert two["test_result"].keys() == single["test_result"].keys()
    assert two["teacher_test_result"].keys() == single["teacher_test_result"].keys()
    assert all(0 <= v <= 1 for v in two["test_result"].values())
    assert len(two["valid_history"]) == len(two["loss_history"]) == 3
    assert two["loss_history"][-1] < two["loss_history"][0]  # stage 2 learns with averaged gradients
    assert two["run_dir"] != single["run_dir"]
    run = RunDirectory.open(two["run_dir"])  # rank 0 wrote one complete run folder
    assert run.adapter.is_dir() and run.teacher.is_file() and run.result.is_file()


def _rank(rank: int, port: str, values: tuple[float, float], out) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://localhost:{port}")
    try:
        out[rank] = float(distributed.weighted_mean(torch.tensor([rank + 1.0]), weight=rank + 1))
        assert distributed.share(list(range(5))) == [rank, rank + 2, rank + 4][: 3 - rank]
        assert distributed.from_rank0(f"rank {rank}") == "rank 0" and distributed.total(rank + 1) == 3
        distributed.check_synchronised({"w": torch.tensor([1.0, values[rank]])}, "The test tensor")
    finally:
        dist.destroy_process_group()


def test_collectives_average_by_share_and_catch_diverged_ranks():
    out = mp.get_context("spawn").Manager().dict()
    mp.spawn(_rank, args=(_free_port(), (2.0, 2.0), out), nprocs=2, join=True)
    assert out[0] == out[1] == pytest.approx(5 / 3)  # (1 x 1 + 2 x 2) / (1 + 2)
    with pytest.raises(mp.ProcessRaisedException, match="differs between the 2 ranks"):
        mp.spawn(_rank, args=(_free_port(), (2.0, 3.0), out), nprocs=2, join=True)
