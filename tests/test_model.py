"""DELRec inside RecBole: grouping in predict, training updates, AdaLoRA, clean candidates."""

import numpy as np
import pytest
import torch
from recbole.data.interaction import cat_interactions
from recbole.utils import init_seed

from recbole_delrec.data.prefixes import stage2_rows
from recbole_delrec.llm.adapters import ADAPTER_TAGS
from recbole_delrec.delrec.model import DELRec
from recbole_delrec.delrec.trainer import DELRecTrainer


def _first_batch(loader):
    return next(iter(loader))


def test_predict_groups_rows_per_user_even_with_many_users(tiny_model, tiny_data):
    _, _, _, test = tiny_data
    interaction, row_idx, _, _ = _first_batch(test)
    tiny_model.eval()
    users = row_idx.unique()
    assert len(users) > 2  # a real RecBole batch with several users' candidate rows
    with torch.no_grad():
        together = tiny_model.predict(interaction)
        for user in users[:3]:
            rows = torch.nonzero(row_idx == user).flatten()
            alone = tiny_model.predict(interaction[rows])
            assert torch.allclose(together[rows], alone, atol=1e-5)


def test_predict_scores_each_prompt_as_score_listed_does(tiny_model, tiny_data):
    """``candidate_orders: 2``: predict's per-row scores are :meth:`score_listed`'s mean over the
    orders of each prompt's listed candidates, also for a smaller group padded in the batch."""
    _, _, _, test = tiny_data
    interaction, row_idx, _, _ = _first_batch(test)
    groups = [torch.nonzero(row_idx == user).flatten() for user in (0, 1)]
    groups[1] = groups[1][:5]  # a smaller second prompt: padded beside the first
    tiny_model.eval()
    tiny_model.candidate_orders = 2
    with torch.no_grad():
        together = tiny_model.predict(cat_interactions([interaction[g] for g in groups]))
        expected = []
        for rows in groups:
            group = interaction[rows]
            items = group[tiny_model.POS_ITEM_ID].cpu()
            listed = tiny_model.prompt_order(items, int(group[tiny_model.USER_ID][0]))
            scores = tiny_model.score_listed(group[torch.tensor([0])], listed[None])[0]
            expected.append(scores[[listed.tolist().index(i) for i in items.tolist()]])
    assert torch.allclose(together, torch.cat(expected), atol=1e-5)


def test_predict_prompt_lists_exactly_the_users_candidates(tiny_model, tiny_data):
    _, _, _, test = tiny_data
    interaction, row_idx, _, _ = _first_batch(test)
    rows = torch.nonzero(row_idx == 0).flatten()
    group = interaction[rows]
    items = group[tiny_model.POS_ITEM_ID]
    shuffled = tiny_model.prompt_order(items, int(group[tiny_model.USER_ID][0]))
    assert sorted(shuffled.tolist()) == sorted(set(items.tolist()))
    assert shuffled.tolist() != list(dict.fromkeys(items.tolist()))  # positive is not kept first


def test_one_training_step_moves_adapters_only(tiny_model, tiny_data):
    config, train, _, _ = tiny_data
    trainer = DELRecTrainer(config, tiny_model)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    batch = _first_batch(train)
    tiny_model.train()
    trainer.optimizer.zero_grad()
    tiny_model.calculate_loss(batch).backward()
    trainer.optimizer.step()
    after = tiny_model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("lora_" in k for k in changed)
    assert all(any(tag in k for tag in ADAPTER_TAGS) for k in changed), changed
    assert torch.equal(before["soft_prompt.weight"], after["soft_prompt.weight"])
    assert trainer.global_step == 1  # AdaLoRA's allocation ran after the step
    assert len(tiny_model.llm.base_model.rankallocator.ipt) > 0


def test_eval_candidates_are_clean_and_fixed(tiny_model, tiny_data):
    _, _, _, test = tiny_data
    interaction, row_idx, _, _ = _first_batch(test)
    firsts = torch.as_tensor(np.r_[0, np.nonzero(np.diff(row_idx.numpy()))[0] + 1])
    rows = interaction[firsts]
    args = (rows[tiny_model.USER_ID], rows[tiny_model.POS_ITEM_ID], rows[tiny_model.ITEM_SEQ], "test")
    first, again = tiny_model.sampler.candidates(*args), tiny_model.sampler.candidates(*args)
    assert torch.equal(first, again)
    assert first.shape[1] == 20
    for row, user in enumerate(rows[tiny_model.USER_ID].tolist()):
        cands = first[row].tolist()
        assert cands[0] == int(rows[tiny_model.POS_ITEM_ID][row]) and len(set(cands)) == 20
        known = set(tiny_model.sampler.known(user, rows[tiny_model.ITEM_SEQ][row].numpy()).tolist())
        assert not known & set(cands[1:])


def test_checkpoint_holds_trainable_weights_only(tiny_model, tiny_data, tmp_path):
    config, _, _, _ = tiny_data
    trainer = DELRecTrainer(config, tiny_model)
    trainer._save_checkpoint(0, verbose=False, saved_model_file=str(tmp_path / "ckpt.pth"))
    saved = torch.load(tmp_path / "ckpt.pth", weights_only=True)["state_dict"]
    assert "soft_prompt.weight" in saved
    assert all(k.startswith("soft_prompt") or any(tag in k for tag in ADAPTER_TAGS) for k in saved)
    assert sum(v.numel() for v in saved.values()) < sum(p.numel() for p in tiny_model.parameters()) / 2


def test_gradient_checkpointing_gives_the_same_loss_and_adapter_gradients(tiny_data):
    """The option trades time for memory only: AdaLoRA through PEFT, recomputed in backward."""
    config, train, _, _ = tiny_data
    batch = _first_batch(train)
    grads = []
    for checkpointing in (False, True):
        config["gradient_checkpointing"] = checkpointing
        init_seed(config["seed"], config["reproducibility"])
        model = DELRec(config, train._dataset).train()
        assert model.llm.get_base_model().is_gradient_checkpointing == checkpointing
        init_seed(config["seed"], config["reproducibility"])
        loss = model.calculate_loss(batch)
        loss.backward()
        grads.append((loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    config["gradient_checkpointing"] = False
    (plain_loss, plain), (ckpt_loss, ckpt) = grads
    assert ckpt_loss == pytest.approx(plain_loss, abs=1e-6)
    assert plain.keys() == ckpt.keys() and any("lora_A" in n for n in plain)
    for name, grad in plain.items():
        assert torch.allclose(grad, ckpt[name], atol=1e-6), name


@pytest.mark.parametrize("fused", [True, False])
def test_fused_gelu_follows_the_config(tiny_data, fused):
    config, train, _, _ = tiny_data
    default, config["fused_gelu"] = config["fused_gelu"], fused
    try:
        model = DELRec(config, train._dataset)
    finally:
        config["fused_gelu"] = default
    acts = {type(m.act).__name__ for m in model.llm.modules() if hasattr(m, "wo")}  # feed-forward blocks
    assert acts == ({"GELUTanh"} if fused else {"NewGELUActivation"})


def test_stage2_rows_are_each_users_latest_capped_by_a_seeded_sample(tiny_data):
    config, train, _, _ = tiny_data
    dataset = train._dataset
    latest = stage2_rows(dataset, {**_settings(config), "train_max_prefixes": None})
    users = dataset.inter_feat[dataset.uid_field].numpy()[latest]
    assert len(latest) == len(set(users.tolist()))  # one (the latest) prefix per user
    capped = stage2_rows(dataset, {**_settings(config), "train_max_prefixes": 10})
    assert len(capped) == 10 and set(capped.tolist()) <= set(latest.tolist())
    assert capped.tolist() == stage2_rows(dataset, {**_settings(config), "train_max_prefixes": 10}).tolist()
    other_seed = stage2_rows(dataset, {**_settings(config), "train_max_prefixes": 10, "seed": 8})
    assert other_seed.tolist() != capped.tolist()


def _settings(config) -> dict:
    return {"train_prefixes_per_user": 1, "seed": config["seed"]}
