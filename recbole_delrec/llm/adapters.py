"""AdaLoRA adapters (PEFT) for stage 2, and the two duties PEFT leaves to a custom loop.

PEFT adds AdaLoRA's orthogonal regularisation only when the wrapped model returns
``.loss``; DELRec's loss is a softmax over candidate scores, so :func:`orthogonal_penalty`
adds it here.  AdaLoRA's rank allocation must run after every optimizer step with the true
global step and a ``total_step`` fixed in advance: :func:`allocate_ranks` is that call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from peft import AdaLoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

ADALORA_KEYS = ("init_r", "target_r", "lora_alpha", "lora_dropout", "target_modules",
                "modules_to_save", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight")
#: Parameter/buffer name parts of everything PEFT trains or tracks (adapters, rank state,
#: fully trained copies of ``modules_to_save``).
ADAPTER_TAGS = ("lora_", "ranknum", "modules_to_save")


def add_adalora(model: PreTrainedModel, options: Mapping[str, Any], total_step: int) -> PeftModel:
    """Wrap ``model`` with AdaLoRA; only the adapters are trainable afterwards."""
    unknown = set(options) - set(ADALORA_KEYS)
    if unknown:
        raise ValueError(f"Unknown `adalora` options {sorted(unknown)}; known: {list(ADALORA_KEYS)}.")
    opts = dict(options)
    # The schedule needs a budgeting phase: shrink tinit/tfinal on very short runs.
    span = max(total_step, 3)
    opts["tinit"] = min(int(opts.get("tinit", 0)), span // 3)
    opts["tfinal"] = min(int(opts.get("tfinal", 0)), span // 3)
    config = AdaLoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, total_step=span, **opts)
    return get_peft_model(model, config)


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
