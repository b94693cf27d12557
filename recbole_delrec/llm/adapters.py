"""AdaLoRA adapters (PEFT) for stage 2, and the two duties PEFT leaves to a custom loop.

PEFT adds AdaLoRA's orthogonal regularisation only when the wrapped model returns
``.loss``; DELRec's loss is a softmax over candidate scores, so :func:`orthogonal_penalty`
adds it here.  AdaLoRA's rank allocation must run after every optimizer step with the true
global step and a ``total_step`` fixed in advance: :func:`allocate_ranks` is that call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from peft import AdaLoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.adalora import AdaLoraLayer
from transformers import PreTrainedModel

ADALORA_KEYS = ("init_r", "target_r", "lora_alpha", "lora_dropout", "target_modules",
                "modules_to_save", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight")
#: Parameter/buffer name parts of everything PEFT trains or tracks (adapters, rank state,
#: fully trained copies of ``modules_to_save``).
ADAPTER_TAGS = ("lora_", "ranknum", "modules_to_save")


def add_adalora(
    model: PreTrainedModel, options: Mapping[str, Any], total_step: int, task_type: TaskType = TaskType.SEQ_2_SEQ_LM
) -> PeftModel:
    """Wrap ``model`` with AdaLoRA; only the adapters are trainable afterwards.

    ``target_modules: ~`` takes PEFT's default for the architecture: the attention's query and
    value projections (``q``/``v`` in T5, the paper's choice; ``q_proj``/``v_proj`` in Llama)."""
    unknown = set(options) - set(ADALORA_KEYS)
    if unknown:
        raise ValueError(f"Unknown `adalora` options {sorted(unknown)}; known: {list(ADALORA_KEYS)}.")
    opts = dict(options)
    # The schedule needs a budgeting phase: shrink tinit/tfinal on very short runs.
    span = max(total_step, 3)
    opts["tinit"] = min(int(opts.get("tinit", 0)), span // 3)
    opts["tfinal"] = min(int(opts.get("tfinal", 0)), span // 3)
    config = AdaLoraConfig(task_type=task_type, total_step=span, **opts)
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "ranknum" in name:  # a constant divisor; PEFT's dtype cast can leave it trainable (bf16)
            param.requires_grad_(False)
    return peft_model


@contextlib.contextmanager
def merged_adapters(model: PeftModel) -> Iterator[None]:
    """The adapters merged into the base weights for the block (PEFT's ``merge_adapter``): one
    matmul per adapted projection instead of the base weight's plus PEFT's float32 side path.
    Each merged weight is restored from its copy afterwards, because an unmerge in bf16 would not
    give the same bits back and training must go on from exactly the weights it left."""
    layers = [m for m in model.modules() if isinstance(m, AdaLoraLayer)]
    saved = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for layer, weight in zip(layers, saved):
                layer.get_base_layer().weight.copy_(weight)


def orthogonal_penalty(model: PeftModel) -> torch.Tensor | float:
    """AdaLoRA's orthogonal regularisation (weighted), as PEFT adds it to ``outputs.loss``."""
    config = model.peft_config[model.active_adapter]
    terms = []
    for name, param in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and param.requires_grad:
            cov = param @ param.T if "lora_A" in name else param.T @ param
            eye = torch.eye(*cov.shape, device=cov.device, dtype=cov.dtype)
            terms.append(torch.norm(cov - eye, p="fro"))
    if not terms:
        return 0.0
    return config.orth_reg_weight * torch.stack(terms).mean()


def allocate_ranks(model: PeftModel, global_step: int) -> None:
    """AdaLoRA's budget/rank update: after ``backward`` and ``step``, before ``zero_grad``."""
    model.base_model.update_and_allocate(global_step)


def base_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The frozen base model's own weights, under its original (un-wrapped) names."""
    state = model.get_base_model().state_dict()
    return {
        k.replace(".base_layer", "").replace(".original_module", ""): v
        for k, v in state.items()
        if not any(tag in k for tag in ADAPTER_TAGS)
    }


def rank_state(model: PeftModel) -> dict:
    """AdaLoRA's allocator state (importance averages, rank pattern): part of a resume."""
    allocator = model.base_model.rankallocator
    return {
        "ipt": dict(allocator.ipt), "exp_avg_ipt": dict(allocator.exp_avg_ipt),
        "exp_avg_unc": dict(allocator.exp_avg_unc),
        "rank_pattern": model.peft_config[model.active_adapter].rank_pattern,
    }


def load_rank_state(model: PeftModel, state: dict) -> None:
    allocator = model.base_model.rankallocator
    allocator.ipt, allocator.exp_avg_ipt = dict(state["ipt"]), dict(state["exp_avg_ipt"])
    allocator.exp_avg_unc = dict(state["exp_avg_unc"])
    model.peft_config[model.active_adapter].rank_pattern = state["rank_pattern"]
