"""Stage 1: distil the teacher's recommendation pattern into the soft prompt.

The LLM is frozen (its AdaLoRA adapters switched off); only the soft-prompt vectors train,
on TA and RPS examples jointly with dynamic task weights.  Fidelity (how often the prompted
LLM's top-1 on an RPS prompt equals the teacher's top-1) is measured on users held out from
stage-1 training, before training (the random soft prompt) and after every epoch; the best
trained soft prompt is kept (never the random one: a TA-only soft prompt, which the RPS fidelity
may not reward, is still the TA-trained one), saved as its own file and reused by later runs
with the same teacher, data set, LLM and stage-1 settings.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from recbole.utils import set_color
from tqdm import tqdm

from recbole_delrec import distributed
from recbole_delrec.delrec.distill.batching import bucketed_batches, padding_share
from recbole_delrec.delrec.distill.examples import RPSExample, TAExample, rps_examples, ta_examples
from recbole_delrec.delrec.distill.weighting import task_weights
from recbole_delrec.data.fields import item_seq_field
from recbole_delrec.data.prefixes import latest_prefix_rows

TASK_NAMES = ("ta", "rps")


class SoftPromptDistiller:
    """Trains ``model.soft_prompt`` so the frozen LLM imitates ``model.teacher``."""

    def __init__(self, model, config) -> None:
        tasks = list(config["delrec_tasks"] or [])
        unknown = set(tasks) - set(TASK_NAMES)
        if unknown:
            raise ValueError(f"delrec_tasks {sorted(unknown)} unknown: use a subset of {list(TASK_NAMES)}.")
        self.model, self.config, self.tasks = model, config, tasks
        self.rng = np.random.default_rng(config["seed"] + 1)
        self.padding: dict[str, float] = {}
        self.logger = getLogger()

    # ------------------------------------------------------------------ data
    def build(self, dataset) -> tuple[dict[str, list], list[RPSExample]]:
        """Training examples per task, and RPS examples of held-out users (fidelity)."""
        users, sequences = _training_sequences(dataset, self.config["stage1_prefixes_per_user"])
        holdout = self._holdout(users)
        train = [i for i, u in enumerate(users) if u not in holdout]
        test = [i for i, u in enumerate(users) if u in holdout]
        cap = self.config["stage1_max_examples"]
        if cap and len(train) > cap:  # a fixed CPU budget: a seeded sample of the training prefixes
            train = sorted(self.rng.choice(train, cap, replace=False).tolist())
        examples = {task: self._examples(task, [users[i] for i in train], [sequences[i] for i in train])
                    for task in self.tasks}
        fidelity = self._examples("rps", [users[i] for i in test], [sequences[i] for i in test])
        return self._without_empty_tasks(examples, [len(sequences[i]) for i in train]), fidelity

    def _without_empty_tasks(self, examples: dict[str, list], lengths: list[int]) -> dict[str, list]:
        """The tasks that have examples: a catalogue of short histories has no TA example (a TA
        prompt needs a demonstration and a query), and stage 1 then trains on the others."""
        for task in [t for t, items in examples.items() if not items]:
            need = (f"a training sequence of {self.config['ta_demo_length'] + self.config['ta_query_length'] + 2} "
                    f"items (ta_demo_length + ta_query_length + 2)" if task == "ta" else "a training prefix")
            rest = ", ".join(t for t, items in examples.items() if items)
            self.logger.warning(set_color("Stage 1", "yellow") + f": no {task} example: a {task} prompt needs {need}, "
                                f"and the longest of these {len(lengths)} users has {max(lengths, default=0)}; stage 1 "
                                f"trains on {rest or 'nothing (the soft prompt stays random)'}"
                                + (". Lower ta_demo_length and ta_query_length to keep it." if task == "ta" else "."))
        return {t: items for t, items in examples.items() if items}

    def _holdout(self, users: Sequence[int]) -> set[int]:
        distinct = np.unique(users)
        n = max(1, int(round(len(distinct) * self.config["stage1_holdout_users"])))
        return set(np.random.default_rng(self.config["seed"]).choice(distinct, n, replace=False).tolist())

    def _examples(self, task: str, users: list[int], sequences: list[list[int]]) -> list:
        teacher, sampler, cfg = self.model.teacher, self.model.sampler, self.config
        if task == "rps":
            histories = [s[-self.model.history_length :] for s in sequences]
            return rps_examples(teacher, histories, users, sampler, cfg["teacher_topk"], self.rng)
        return ta_examples(teacher, sequences, users, sampler, cfg["ta_demo_length"], cfg["ta_query_length"], self.rng)

    # ------------------------------------------------------------------ scoring
    def scores(self, task: str, batch: Sequence) -> torch.Tensor:
        """LLM candidate scores for a batch of examples (call inside :meth:`frozen_llm`)."""
        slots = [_slots(example) for example in batch]
        candidates = torch.as_tensor([example.candidates for example in batch])
        return self.model.score_prompts(task, slots, candidates)

    def frozen_llm(self):
        """The LLM as stage 1 sees it: adapters off, for the forward *and* the backward.

        Under gradient checkpointing the backward recomputes the forward, so it must run in
        the same context (else the recomputation would run the adapters).
        """
        return self.model.llm.disable_adapter()

    def loss(self, task: str, batch: Sequence) -> torch.Tensor:
        scores = self.scores(task, batch)
        targets = torch.as_tensor([example.target for example in batch], device=scores.device)
        if task == "rps" and self.config["rps_loss"] == "kl":
            teacher = torch.as_tensor([example.teacher_scores for example in batch], device=scores.device)
            soft_targets = F.softmax(teacher / self.config["rps_temperature"], dim=1)
            return F.kl_div(F.log_softmax(scores, dim=1), soft_targets, reduction="batchmean")
        return F.cross_entropy(scores, targets)

    @torch.no_grad()
    def fidelity(self, examples: Sequence[RPSExample]) -> float:
        """Share of held-out prompts whose LLM top-1 is the teacher's top-1."""
        self.model.eval()
        hits, size = 0, self.model.prompts_per_forward  # one LLM forward per batch
        mine = distributed.share(examples)  # each rank scores its share; the counts are summed
        order = np.argsort(self.prompt_lengths("rps", mine), kind="stable")  # little padding, sorted across all
        for start in range(0, len(order), size):
            batch = [mine[i] for i in order[start : start + size]]
            with self.frozen_llm(), self._autocast():
                predicted = self.scores("rps", batch).argmax(dim=1).cpu()
            hits += int((predicted == torch.as_tensor([e.target for e in batch])).sum())
        return distributed.total(hits) / max(1, len(examples))

    def _autocast(self):
        """RecBole's ``enable_amp``: autocast to the device's half type, as in stage 2."""
        return torch.autocast(device_type=self.model.device.type, enabled=bool(self.config["enable_amp"]))

    # ------------------------------------------------------------------ training
    def fit(self, dataset) -> dict[str, float]:
        """Train the soft prompt; returns fidelity before (random prompt) and after."""
        examples, holdout = self.build(dataset)
        lengths = {task: self.prompt_lengths(task, items) for task, items in examples.items()}
        prompt = self.model.soft_prompt
        before = self.fidelity(holdout)
        best, best_state = -1.0, None
        self.logger.info(set_color("Stage 1", "green") + f": {', '.join(f'{t}={len(v)}' for t, v in examples.items())} "
                         f"examples, {len(holdout)} held-out prompts, fidelity with a random soft prompt {before:.4f}")
        prompt.requires_grad_(True)
        optimizer = torch.optim.Adam(prompt.parameters(), lr=self.config["stage1_learning_rate"])
        # RecBole's enable_scaler (fp16 on CUDA only, as RecBole's Trainer does it)
        scaler = torch.amp.GradScaler(enabled=torch.cuda.is_available() and bool(self.config["enable_scaler"]))
        for epoch in range(self.config["stage1_epochs"] if examples else 0):
            losses = self._epoch(examples, lengths, optimizer, scaler, epoch)
            fidelity = self.fidelity(holdout)
            self.logger.info(set_color("Stage 1", "green") + f": epoch {epoch} {losses} fidelity {fidelity:.4f}")
            if fidelity > best:
                best, best_state = fidelity, copy.deepcopy(prompt.state_dict())
        prompt.requires_grad_(False)
        return {"fidelity_random": before, "fidelity_distilled": self._keep(before, best, best_state)}

    def _keep(self, before: float, best: float, best_state: dict | None) -> float:
        """Load the best trained soft prompt (none without an epoch) and return its fidelity."""
        if best_state is None:  # no epoch ran (stage1_epochs: 0, or no example): nothing trained
            return before
        self.model.soft_prompt.load_state_dict(best_state)
        if best <= before:
            self.logger.warning(set_color("Stage 1", "yellow") + f": no epoch raised the fidelity above the random "
                                f"soft prompt's ({best:.4f} <= {before:.4f}); the best trained one is kept all the same")
        return best

    def prompt_lengths(self, task: str, examples: Sequence) -> list[int]:
        """Token length of each example's prompt (what its batch is padded to)."""
        return [self.model.prompts[task].length(**_slots(example)) for example in examples]

    def _streams(self, examples: dict[str, list], lengths: dict[str, list[int]]) -> dict[str, list[list]]:
        """Each task's batches for one epoch, bucketed by prompt length (``stage1_bucket_window``)."""
        size, window = self.config["stage1_batch_size"], self.config["stage1_bucket_window"]
        streams = {}
        for task, items in examples.items():
            batches = bucketed_batches(lengths[task], size, window, self.rng)
            self.padding[task] = padding_share(lengths[task], batches)
            streams[task] = [[items[i] for i in batch] for batch in batches]
        return streams

    def _epoch(self, examples: dict[str, list], lengths: dict[str, list[int]], optimizer, scaler, epoch: int) -> str:
        self.model.train()
        streams = self._streams(examples, lengths)
        steps = max(len(s) for s in streams.values())
        totals = {t: 0.0 for t in streams}
        bar = tqdm(range(steps), ncols=100, desc=set_color(f"Stage 1 {epoch:>3}", "pink"),
                   disable=not self.config["show_progress"])
        for step in bar:
            batch = {t: s[step % len(s)] for t, s in streams.items()}
            for task, value in self.step(batch, optimizer, scaler).items():
                totals[task] += value / steps
        return ", ".join(f"{t} loss {v:.4f} (padding {self.padding[t]:.1%})" for t, v in totals.items())

    def step(self, batch: dict[str, Sequence], optimizer, scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
        """One weighted update of the soft prompt from each task's batch (on every rank).

        Each rank computes its share of the batch; gradients and losses are averaged over ranks
        before the task weights are taken, so every rank makes the same update.  The weights are
        normalised, so a gradient scaler's factor cancels in them; ``scaler.step`` unscales.
        """
        scaler = scaler or torch.amp.GradScaler(enabled=False)
        weight = self.model.soft_prompt.weight
        losses, grads = {}, {}
        for task, examples in batch.items():
            mine = distributed.share(examples)
            loss, grad = torch.zeros((), device=weight.device), torch.zeros_like(weight)
            if mine:
                with self.frozen_llm():
                    with self._autocast():
                        loss = self.loss(task, mine)
                    grad = torch.autograd.grad(scaler.scale(loss), weight)[0]
            grads[task] = distributed.weighted_mean(grad, len(mine))
            losses[task] = distributed.weighted_mean(loss.detach().float(), len(mine)).item()
        weights = task_weights(grads, self.config["stage1_weighting"])
        optimizer.zero_grad()
        weight.grad = sum(weights[t] * grads[t] for t in grads)
        scaler.step(optimizer)
        scaler.update()
        self.last_weights = weights
        return losses


def _training_sequences(dataset, per_user: int) -> tuple[list[int], list[list[int]]]:
    """(user, item sequence incl. target) of each user's latest training prefixes."""
    feat = dataset.inter_feat[latest_prefix_rows(dataset, per_user)]
    seqs = feat[item_seq_field(dataset)].tolist()
    lengths = feat[dataset.item_list_length_field].tolist()
    targets = feat[dataset.iid_field].tolist()
    users = feat[dataset.uid_field].tolist()
    return users, [s[:n] + [t] for s, n, t in zip(seqs, lengths, targets)]


def _slots(example) -> dict:
    if isinstance(example, TAExample):
        return {"demo_history": example.demo_history, "demo_prediction": example.demo_prediction,
                "demo_answer": example.demo_answer, "query_history": example.query_history,
                "query_prediction": example.query_prediction, "candidates": example.candidates}
    return {"history": example.history, "candidates": example.candidates}
