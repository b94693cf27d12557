"""TSLRec on the ML-100K slice: pre-grouping, the LLM's call counts, the gate, whole runs.

No mocks: the LLM is the tiny scratch T5 (counted with forward hooks on its real encoder),
the backbones are RecBole's own models, and the runs go through RecBole's loaders and
Trainer.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from recbole.quick_start import run_recbole
from recbole.utils import init_seed
from torch import nn
from transformers.models.t5.modeling_t5 import T5Stack

from recbole_delrec.runs.artifacts import load_tensors
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.llm.loading import load_backbone
from recbole_delrec.tslrec.model import TSLRec
from recbole_delrec.tslrec.gated import GatedItemEmbedding, GroupedItemEmbedding
from recbole_delrec.tslrec.grouping import item_groups, kmeans, preference_targets, user_sequences
from recbole_delrec.tslrec.sft import PreferenceLLM, augment, tokenizer_corpus, train_sft, tslrec_template
from recbole_delrec.tslrec.quick_start import run_tslrec
from tests.conftest import TINY_LLM, TSL, tsl_dict

METRICS = {"hit@5", "hit@10", "ndcg@5", "ndcg@10"}
pytestmark = pytest.mark.usefixtures("one_thread")


class EncoderCalls:
    """Counts the sequences (batch rows) that went through any T5 encoder, via real hooks."""

    def __init__(self, encoder: nn.Module | None = None) -> None:
        self.rows = 0
        hook = lambda module, args, output: self._count(module, output)  # noqa: E731
        if encoder is None:
            self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        else:
            self.handle = encoder.register_forward_hook(hook)

    def _count(self, module, output) -> None:
        if isinstance(module, T5Stack) and not module.is_decoder:
            self.rows += output[0].shape[0]

    def close(self) -> None:
        self.handle.remove()


# ---------------------------------------------------------------- pre-grouping
def test_kmeans_is_seeded_and_finds_separated_groups():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(20, 2, generator=gen) for c in centres])
    labels, _ = kmeans(points, 3, seed=7)
    for block in labels.view(3, 20):
        assert len(set(block.tolist())) == 1
    assert len(set(labels.tolist())) == 3
    assert torch.equal(kmeans(points, 3, seed=7)[0], labels)


def test_user_targets_are_group_distributions_of_training_interactions(tiny_data):
    _, train, _, _ = tiny_data
    dataset = train._dataset
    table = torch.randn(dataset.item_num, 8, generator=torch.Generator().manual_seed(1))
    groups = item_groups(table, 4, seed=7)
    assert groups[0] == -1 and set(groups[1:].tolist()) == {0, 1, 2, 3}
    sequences = user_sequences(dataset)
    rows_per_user = torch.bincount(dataset.inter_feat[dataset.uid_field])
    for user, items in sequences.items():  # the first item, then one per training row
        assert len(items) == rows_per_user[user] + 1 and min(items) > 0
    targets = preference_targets(sequences, groups, 4)
    assert set(targets) == set(sequences)
    for user, target in targets.items():
        assert target.shape == (4,) and (target >= 0).all()
        assert torch.isclose(target.sum(), torch.tensor(1.0))
    user = next(iter(sequences))
    counts = torch.bincount(groups[torch.tensor(sequences[user])], minlength=4).float()
    assert torch.allclose(targets[user], counts / counts.sum())


# ---------------------------------------------------------------- the LLM's two passes
def test_llm_runs_once_per_user_per_epoch_and_once_per_item(tiny_data):
    config, train, _, _ = tiny_data
    dataset = train._dataset
    init_seed(7, True)
    template = tslrec_template({"domain": config["domain"], "prompt_template_dir": None})
    backbone = load_backbone({"llm_path": "scratch", "llm_gguf_file": None, "scratch_llm": TINY_LLM},
                             tokenizer_corpus(template, 4))
    table = torch.randn(dataset.item_num, 8)
    llm = PreferenceLLM(backbone, table, 4, template, TSL["lora"])
    encoder = llm.encoder.get_base_model()
    trainable = {n for n, p in llm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("item_proj", "group_head")) for n in trainable)
    frozen_q = encoder.block[0].layer[0].SelfAttention.q.base_layer.weight.clone()

    sequences = user_sequences(dataset)
    targets = preference_targets(sequences, item_groups(table, 4, seed=7), 4)
    users = sorted(targets)
    calls = EncoderCalls(encoder)
    sft = train_sft(llm, [sequences[u][-10:] for u in users], torch.stack([targets[u] for u in users]),
                    epochs=2, batch_size=16, learning_rate=0.01, seed=7)
    assert calls.rows == llm.calls["sft"] == 2 * len(users)
    assert sft["llm_seconds_per_epoch"] > 0 and len(sft["losses"]) == 2
    assert torch.equal(encoder.block[0].layer[0].SelfAttention.q.base_layer.weight, frozen_q)
    assert encoder.block[0].layer[0].SelfAttention.q.lora_B["default"].weight.abs().sum() > 0  # LoRA learned

    calls.rows = 0
    embeddings, distributions = augment(llm, dataset.item_num, batch_size=500)
    calls.close()
    assert calls.rows == llm.calls["augment"] == dataset.item_num - 1
    assert embeddings.shape == (dataset.item_num, backbone.width)
    assert not embeddings[0].any() and embeddings[1:].abs().sum(1).gt(0).all()
    assert torch.allclose(distributions[1:].sum(1), torch.ones(dataset.item_num - 1))
    assert not torch.allclose(embeddings[1], embeddings[2])  # the item, not just the instruction


# ---------------------------------------------------------------- the gate
def test_gate_mixes_both_embeddings_and_trains_both():
    torch.manual_seed(0)
    ids_table = nn.Embedding(10, 8, padding_idx=0)
    knowledge = torch.randn(10, 6)
    module = GatedItemEmbedding(ids_table, knowledge)
    ids = torch.tensor([[1, 2, 3, 0]])
    out, gate = module.mix(ids)
    real = ids != 0
    assert ((gate > 0) & (gate < 1)).all()
    e_id, e_llm = ids_table(ids), module.proj(module.knowledge[ids])
    assert not torch.allclose(out[real], e_id[real]) and not torch.allclose(out[real], e_llm[real])
    assert torch.allclose(out, gate * e_id + (1 - gate) * e_llm * real.unsqueeze(-1))
    assert not out[~real].any()  # padding stays zero, like nn.Embedding(padding_idx=0)
    assert module.weight.shape == (10, 8) and torch.allclose(module.weight[ids], module(ids))
    assert (module.num_embeddings, module.embedding_dim, module.padding_idx) == (10, 8, 0)

    (module(ids).pow(2).sum() + module.weight.sum()).backward()
    assert ids_table.weight.grad[1:4].abs().sum(1).gt(0).all()
    assert module.proj.weight.grad.abs().sum() > 0 and module.gate.weight.grad.abs().sum() > 0
    assert not module.knowledge.requires_grad


def test_ci_adds_a_group_embedding():
    ids_table = nn.Embedding(6, 4, padding_idx=0)
    module = GroupedItemEmbedding(ids_table, torch.tensor([-1, 0, 0, 1, 1, 1]), n_groups=2)
    ids = torch.tensor([0, 1, 2, 3])
    out = module(ids)
    assert not out[0].any()
    assert torch.allclose(out[1] - ids_table.weight[1], out[2] - ids_table.weight[2])
    assert not torch.allclose(out[2] - ids_table.weight[2], out[3] - ids_table.weight[3])
    assert torch.allclose(module.weight[ids], out)


@pytest.mark.parametrize("backbone", ["GRU4Rec", "Caser", "NARM", "STAMP", "NextItNet"])
def test_any_recbole_backbone_takes_the_gated_embedding(tiny_data, saved_dir, backbone):
    config, train, _, _ = tiny_data
    tconfig = isolated_config("TSLRec", "ml-100k", tsl_dict(saved_dir, backbone=backbone))
    model = TSLRec(tconfig, train._dataset)
    original = model.item_embedding
    model.attach_knowledge(torch.randn(train._dataset.item_num, 12))
    assert model.item_embedding.id_embedding is original
    batch = train._dataset.inter_feat[torch.arange(32)]
    model.calculate_loss(batch).backward()
    assert original.weight.grad is not None and model.item_embedding.proj.weight.grad is not None
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
    assert scores.shape == (32, train._dataset.item_num)


# ---------------------------------------------------------------- whole runs
def test_run_tslrec_end_to_end_then_reuses_the_knowledge(tmp_path, capsys):
    checkpoints = tmp_path / "saved"
    calls = EncoderCalls()  # every T5 encoder forward in the process
    try:
        with hidden_command_line():
            first = run_tslrec("ml-100k", "SASRec", config_dict=tsl_dict(checkpoints))
    finally:
        calls.close()
    for variant in ("base", "ci", "tslrec"):
        assert METRICS <= set(first[variant]) and 0.0 <= first[variant]["ndcg@10"] <= first[variant]["hit@10"] <= 1.0
    assert "SASRec + TSLRec" in capsys.readouterr().out
    assert first["llm_seconds_per_epoch"] > 0
    n_users, n_items = 54, 1683  # the slice's training users and item ids (0 = padding)
    assert first["llm_calls"] == {"sft": 2 * n_users, "augment": n_items - 1}
    assert calls.rows == 2 * n_users + n_items - 1
    [artefact] = checkpoints.glob("tslrec-knowledge-ml-100k-SASRec-scratch-t5-*.pth")
    stored = load_tensors(artefact)  # weights-only load
    assert stored["embeddings"].shape == (n_items, TINY_LLM["d_model"]) and stored["groups"].shape == (n_items,)

    calls = EncoderCalls()  # every T5 encoder forward in the process
    try:
        with hidden_command_line():  # another backbone, same knowledge
            again = run_tslrec("ml-100k", "GRU4Rec", config_dict=tsl_dict(checkpoints), variants=["tslrec"])
    finally:
        calls.close()
    assert calls.rows == 0 and again["llm_calls"] == {"sft": 0, "augment": 0}
    assert again["knowledge"]["reused"] and again["knowledge"]["path"] == str(artefact)
    assert again["llm_seconds_per_epoch"] == first["llm_seconds_per_epoch"]
    assert METRICS <= set(again["tslrec"]) and "base" not in again


def test_recbole_runs_tslrec_on_a_data_set_without_item_file(tmp_path):
    """RecBole's own ``run_recbole`` knows TSLRec; only a ``.inter`` file, no item text."""
    inter = pd.read_csv(
        __import__("recbole").__path__[0] + "/dataset_example/ml-100k/ml-100k.inter", sep="\t"
    )
    heavy = inter.groupby("user_id:token")["item_id:token"].transform("size") >= 300
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    inter.loc[heavy, ["user_id:token", "item_id:token", "timestamp:float"]].to_csv(
        folder / "toy.inter", sep="\t", index=False
    )
    assert not list(folder.glob("*.item"))
    values = tsl_dict(tmp_path / "saved", data_path=str(tmp_path / "data"), backbone="GRU4Rec",
                      load_col={"inter": ["user_id", "item_id", "timestamp"]})
    values.pop("user_inter_num_interval")
    with hidden_command_line():
        result = run_recbole(model="TSLRec", dataset="toy", config_dict=values)
    assert METRICS <= set(result["test_result"])
    assert list((tmp_path / "saved").glob("tslrec-knowledge-toy-SASRec-scratch-t5-*.pth"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"backbone": "NoSuchRec"}, "backbone 'NoSuchRec'"),
        ({"backbone": "BERT4Rec"}, "transform"),
        ({"tslrec_variant": "both"}, "tslrec_variant 'both'"),
    ],
)
def test_bad_settings_get_a_clear_error(tiny_data, saved_dir, override, message):
    _, train, _, _ = tiny_data
    config = isolated_config("TSLRec", "ml-100k", tsl_dict(saved_dir, **override))
    with pytest.raises(ValueError, match=message):
        TSLRec(config, train._dataset)
