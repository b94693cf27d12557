"""DELRec as a RecBole sequential model (arXiv 2406.11156).

``calculate_loss`` and ``predict`` wrap the Flan-T5 soft-prompt pipeline:

    history + candidates -> LSR prompt (template file) with the soft-prompt placeholder
    -> encoder (soft prompt spliced in, once per prompt)
    -> decoder scores every candidate's full title in one batch
    -> softmax cross-entropy over candidates (train) / per-row scores (RecBole evaluation)

The soft prompt is trained in stage 1 (:mod:`recbole_delrec.delrec.distill`) and frozen here; the
LLM is adapted with AdaLoRA.  The teacher (a RecBole model) is attached by the trainer and
kept out of this model's ``state_dict``: checkpoints hold only what DELRec trains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType, ModelType

from recbole_delrec import options
from recbole_delrec.data import checks
from recbole_delrec.data.candidates import (CandidateSampler, check_candidates, eval_modes,
                                            saved_candidate_sets)
from recbole_delrec.data.losses import log_history_cuts, log_title_losses
from recbole_delrec.delrec.distill.weighting import WEIGHTINGS
from recbole_delrec.evaluation.baselines import check_baselines
from recbole_delrec.evaluation.buckets import check_options as check_evidence
from recbole_delrec.evaluation.summary import EVIDENCE_KEYS
from recbole_delrec.llm.adapters import ADAPTER_TAGS, add_adalora, orthogonal_penalty
from recbole_delrec.llm.backbone import Backbone, set_speed_options
from recbole_delrec.llm.loading import check_llm_path, load_backbone
from recbole_delrec.llm.soft_prompt import SoftPrompt
from recbole_delrec.data.prefixes import stage2_rows
from recbole_delrec.prompts import (CANDIDATES_SLOT, PromptBuilder, check_template, domain_words, load_template,
                                    template_path)
from recbole_delrec.data.titles import ItemText, TitleTokens, check_title_field
from recbole_delrec.teacher import teacher_class

TASKS = ("lsr", "rps", "ta")
STAGE1_TASKS = ("rps", "ta")
#: Settings that must be whole numbers of at least 1.
COUNTS = ("history_length", "max_title_tokens", "max_prompt_title_tokens", "max_prompt_tokens", "candidate_orders",
          "prompts_per_forward", "ta_demo_length", "ta_query_length", "stage1_batch_size", "stage1_bucket_window")
#: Limits: a whole number of at least 1, or ~ for none.
LIMITS = ("stage1_prefixes_per_user", "stage1_max_examples", "train_prefixes_per_user", "train_max_prefixes",
          "eval_max_users")
#: Whole numbers of at least 0 (0: that step is skipped).
ZERO_OR_MORE = ("stage1_epochs", "n_soft_tokens")
#: Numbers above 0.
RATES = ("stage1_learning_rate", "rps_temperature")
#: DELRec's run stages (``stage``): teacher + stage 1, stage 2 on a saved soft prompt, or both.
STAGES = ("1", "2", "all")
CHOICES = {"rps_loss": ("ce", "kl"), "stage1_weighting": WEIGHTINGS, "stage": STAGES}


class DELRec(SequentialRecommender):
    """An LLM (T5) that ranks candidate titles, prompted with a distilled soft prompt."""

    input_type = InputType.POINTWISE
    type = ModelType.SEQUENTIAL
    skip_flops = True

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.history_length = config["history_length"]
        self.n_soft = config["n_soft_tokens"]
        self.seed = config["seed"]
        self.rerank_k = config["rerank_k"]
        self.candidate_orders = config["candidate_orders"]
        self.prompts_per_forward = config["prompts_per_forward"]
        self.item_text = ItemText.from_dataset(dataset, config["title_field"], config["title_year_field"])
        templates = {t: load_template(t, config["domain"], config["prompt_template_dir"]) for t in TASKS}
        backbone = load_backbone(config, list(self.item_text.titles[1:]) + list(templates.values()))
        self.tokenizer, self.llm_source, self.pad_id = backbone.tokenizer, backbone.name, backbone.pad_id
        self.llm_is_scratch = backbone.source.kind == "scratch"  # built here: the run folder keeps it
        prompt_ids, answer_ids = backbone.title_ids(self.item_text.titles)
        prompt_titles = TitleTokens.cut(prompt_ids, config["max_prompt_title_tokens"])
        scored_titles = TitleTokens.cut(answer_ids, config["max_title_tokens"])
        log_title_losses(dataset.dataset_name, self.item_text, prompt_titles, scored_titles)
        self.max_prompt_tokens = config["max_prompt_tokens"]
        self.prompts = self._builders(config, templates, backbone, prompt_titles.ids)
        check_candidates(config)  # RecBole's run_recbole runs no plugin check: resolved before anything reads it
        n_candidates = config["n_candidates"]
        for task in self.tasks(config):  # before the teacher trains (the trainer trains it in fit)
            checks.prompt_fits(config, task, self.prompts[task].longest(n_candidates), n_candidates)
        self.soft_prompt = SoftPrompt.from_vocabulary(
            self.n_soft, backbone.model.get_input_embeddings().weight, self.seed
        ).requires_grad_(False)
        backbone.model.requires_grad_(False)
        set_speed_options(
            backbone.model, config["llm_attention"], config["fused_gelu"], config["gradient_checkpointing"],
            config["llm_compile"],
        )
        self.llm = add_adalora(backbone.model, self._adalora_options(config, backbone), self._total_steps(config, dataset),
                               backbone.task_type)
        self.scorer = backbone.scorer(scored_titles.ids)
        self.sampler = CandidateSampler.from_dataset(dataset, n_candidates, self.seed, scored_titles.alike)
        self.train_rng = np.random.default_rng(self.seed)
        self.teacher: SequentialRecommender | None = None

    # ------------------------------------------------------------------ checks before training
    @classmethod
    def check_config(cls, config) -> None:
        """Everything the configuration and the atomic files' headers can tell, before
        RecBole reads the data: candidates, baselines, options, teacher, title columns,
        time order (or pre-split histories), templates, LLM."""
        check_candidates(config)
        options.leave_one_out(config)
        check_baselines(config)
        cls.check_settings(config)
        teacher_class(config["teacher_model"])
        checks.sequences_ordered(config)
        titles = {"title_field": config["title_field"]}
        if config["title_year_field"]:
            titles["title_year_field"] = config["title_year_field"]
        checks.item_fields(config, titles)
        static = {"teacher": config["teacher_model"], **domain_words(config["domain"])}
        for task in cls.tasks(config):
            path = template_path(task, config["domain"], config["prompt_template_dir"])
            check_template(task, path.read_text(encoding="utf-8"), static, path)
        check_llm_path(config["llm_path"], config["llm_gguf_file"], config["checkpoint_dir"])

    @staticmethod
    def check_settings(config) -> None:
        """Each setting alone: numbers in range, names known, metrics that the candidate
        ranking reports (:mod:`recbole_delrec.options`)."""
        options.recbole_settings(config)
        options.whole(config, COUNTS)
        options.whole(config, LIMITS, optional=True)
        options.whole(config, ZERO_OR_MORE, least=0)
        options.whole(config, ("teacher_topk",), most=config["n_candidates"],
                      why=": rps lists the teacher's top k among the candidates of a prompt")
        options.number(config, RATES, 0)
        options.number(config, ("stage1_holdout_users",), 0, high=1, low_allowed=True)
        options.one_of(config, CHOICES)
        options.known_tasks(config, STAGE1_TASKS)
        if "full" not in eval_modes(config).values():
            options.cut_offs_below(config, config["n_candidates"])
        check_evidence({key: config[key] for key in EVIDENCE_KEYS if config[key] is not None})  # as summaries read them

    @classmethod
    def check_dataset(cls, config, dataset) -> None:
        """What needs the loaded data: titles loaded, one evaluation row per user in pre-split
        files (and a log line where the parts do not follow each other), enough items for every
        prompt, and a saved candidate file (``candidates_path``) that fits this data set (kept
        for the evaluation)."""
        check_title_field(dataset, config["title_field"])
        checks.one_row_per_user(config, dataset)
        checks.parts_chained(config, dataset)
        checks.catalogue_holds(config, dataset, config["n_candidates"])
        saved_candidate_sets(config, dataset)

    @staticmethod
    def tasks(config) -> tuple[str, ...]:
        """The prompts this run builds: LSR, and the stage-1 tasks of ``delrec_tasks``."""
        return ("lsr", *(t for t in STAGE1_TASKS if t in (config["delrec_tasks"] or ())))

    def train(self, mode: bool = True) -> "DELRec":
        """RecBole (and stage 1) switch the mode at every phase: a training epoch, a
        validation, a test.  Say then what the phase's prompts lost to ``max_prompt_tokens``."""
        self.report_history_cuts()
        return super().train(mode)

    def report_history_cuts(self) -> None:
        """Log what the prompts built since the last report lost to ``max_prompt_tokens``."""
        log_history_cuts(self.prompts, self.max_prompt_tokens)

    # ------------------------------------------------------------------ construction
    def _builders(self, config, templates, backbone: Backbone, title_ids) -> dict[str, PromptBuilder]:
        static = {"teacher": config["teacher_model"], **domain_words(config["domain"])}
        builders = {
            task: backbone.prompt_builder(text, static, title_ids, self.n_soft, config["max_prompt_tokens"])
            for task, text in templates.items()
        }
        if CANDIDATES_SLOT not in builders["lsr"].slots:
            getLogger().info("Prompts: the lsr template lists no candidates: each candidate is scored by the "
                             "likelihood of its title after the history alone (pointwise; candidate order, and so "
                             "`candidate_orders`, changes nothing)")
        return builders

    @staticmethod
    def _adalora_options(config, backbone: Backbone) -> dict:
        """The paper's AdaLoRA settings; the scratch T5 replaces some (``scratch_adalora``)."""
        scratch = config["scratch_adalora"] if backbone.source.kind == "scratch" else None
        return {**config["adalora"], **(scratch or {})}

    @staticmethod
    def _total_steps(config, dataset) -> int:
        """AdaLoRA's ``total_step``: optimizer steps of the whole stage-2 run."""
        rows = len(stage2_rows(dataset, config))
        return config["epochs"] * math.ceil(rows / config["train_batch_size"])

    def attach_teacher(self, teacher: SequentialRecommender) -> None:
        """Keep the teacher for full ranking/explain without making it part of our weights."""
        object.__setattr__(self, "teacher", teacher)

    # ------------------------------------------------------------------ prompts and scores
    def histories(self, interaction: Interaction) -> list[list[int]]:
        """The most recent ``history_length`` items of each row, oldest first."""
        seqs = interaction[self.ITEM_SEQ].tolist()
        lengths = interaction[self.ITEM_SEQ_LEN].tolist()
        return [seq[max(0, n - self.history_length) : n] for seq, n in zip(seqs, lengths)]

    def score_prompts(self, task: str, slots: Sequence[Mapping], candidates: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` candidate scores for prompts of ``task`` filled with ``slots``."""
        prompts = [self.prompts[task].build(**values) for values in slots]
        return self.scorer.score_prompts(self.llm.get_base_model(), self.soft_prompt, prompts,
                                         candidates.to(self.device), self.prompts_per_forward)

    def score_candidates(self, histories: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` LSR scores of each row of ``candidates`` (0 = padding), which the prompt lists
        unless the lsr template leaves ``{candidates}`` out."""
        slots = [
            {"history": history, "candidates": [c for c in row if c > 0]}
            for history, row in zip(histories, candidates.tolist())
        ]
        return self.score_prompts("lsr", slots, candidates)

    def score_listed(self, interaction: Interaction, candidates: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` scores, each row's prompt listing its candidates in the order given (its
        evaluation order, order 0).  With ``candidate_orders`` P > 1, each candidate's mean score
        over that order and the P - 1 next seeded orders (the LLM's position bias averages out)."""
        histories = self.histories(interaction)
        scores = self.score_candidates(histories, candidates)
        users = interaction[self.USER_ID].tolist()
        for order in range(1, self.candidate_orders):
            reordered = torch.stack([self.listed_in_order(row, user, order) for row, user in zip(candidates, users)])
            scores = scores + realigned(self.score_candidates(histories, reordered), reordered, candidates)
        return scores / self.candidate_orders

    def listed_in_order(self, listed: torch.Tensor, user: int, order: int) -> torch.Tensor:
        """The ``order``-th order of candidates given in their evaluation order: the order
        :meth:`prompt_order` gives the same set (the evaluation order is its order 0).  Padding
        (0) after the candidates stays where it is."""
        n = int((listed > 0).sum())
        base = listed[:n][torch.as_tensor(np.argsort(self._permutation(n, user, 0)))]
        return torch.cat([base[torch.as_tensor(self._permutation(n, user, order))], listed[n:]])

    def shown_history(self, interaction: Interaction, candidates: torch.Tensor | None = None) -> list[int]:
        """How many history items each row's prompt shows (``max_prompt_tokens`` drops the oldest).

        ``candidates`` ``None``: the full-ranking prompt, which lists the teacher's top ``rerank_k``.
        """
        if candidates is None:
            candidates = self.retrieve(interaction)[1].cpu()
        return [
            len(self.prompts["lsr"].fitted(history=history, candidates=[c for c in row if c > 0])["history"])
            for history, row in zip(self.histories(interaction), candidates.tolist())
        ]

    def retrieve(self, interaction: Interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's scores of every item and its top ``rerank_k`` outside the history."""
        if self.teacher is None:
            raise RuntimeError("full ranking needs the teacher: fit the model or attach_teacher() first.")
        teacher_scores = self.teacher.full_sort_predict(interaction).float()
        masked = teacher_scores.clone()
        masked[:, 0] = -torch.inf
        masked.scatter_(1, interaction[self.ITEM_SEQ], -torch.inf)
        return teacher_scores, masked.topk(self.rerank_k, dim=1).indices

    # ------------------------------------------------------------------ RecBole API
    def calculate_loss(self, interaction: Interaction) -> torch.Tensor:
        """Softmax cross-entropy of the true item among ``n_candidates`` (shuffled)."""
        candidates = self.sampler.candidates(
            interaction[self.USER_ID], interaction[self.POS_ITEM_ID], interaction[self.ITEM_SEQ],
            "train", rng=self.train_rng,
        )
        order = torch.as_tensor(np.stack([self.train_rng.permutation(candidates.shape[1]) for _ in candidates]))
        candidates = candidates.gather(1, order)
        labels = (order == 0).float().argmax(1).to(self.device)
        scores = self.score_candidates(self.histories(interaction), candidates)
        return F.cross_entropy(scores, labels) + orthogonal_penalty(self.llm)

    def predict(self, interaction: Interaction) -> torch.Tensor:
        """Scores of RecBole's (user, item) rows; rows of one user/history form one prompt.

        Each group's distinct items become that prompt's candidates, listed in the user's
        evaluation order (a seeded shuffle, so that RecBole's positive-first row order cannot
        leak into the prompt), and are scored by :meth:`score_listed`: with
        ``candidate_orders`` P > 1, each item's mean score over P orders.
        """
        starts = _group_starts(interaction[self.USER_ID], interaction[self.ITEM_SEQ])
        items = interaction[self.POS_ITEM_ID].cpu()
        bounds = list(zip(starts, starts[1:] + [len(items)]))
        prompts = interaction[torch.as_tensor(starts)]
        listed = [self.prompt_order(items[a:b], user) for (a, b), user in zip(bounds, prompts[self.USER_ID].tolist())]
        candidates = pad_sequence(listed, batch_first=True)  # 0 = padding after a smaller group's items
        return _scatter_back(self.score_listed(prompts, candidates), candidates, items, bounds)

    def full_sort_predict(self, interaction: Interaction) -> torch.Tensor:
        """Scores of every item: teacher retrieval, then LLM re-ranking of its top ``rerank_k``.

        The teacher ranks the catalogue; its ``rerank_k`` best items that are not already in
        the user's history become the prompt's candidates; the LLM's order of those K is placed
        above every other item, and the rest keep the teacher's order.  Cost: one prompt and
        K candidate scorings per user, like the sampled protocol.
        """
        teacher_scores, top = self.retrieve(interaction)
        listed = self._listed(top.cpu(), interaction[self.USER_ID].tolist())
        llm = self.score_listed(interaction, listed)
        base = teacher_scores.max(dim=1, keepdim=True).values + 1
        return teacher_scores.scatter(1, listed.to(top.device), base + llm - llm.min(dim=1, keepdim=True).values)

    def _listed(self, top: torch.Tensor, users: list[int]) -> torch.Tensor:
        """The teacher's top-K of each row in its user's seeded prompt order, not the teacher's
        rank order: an LLM that favours the first listed candidate must not echo the teacher."""
        return torch.stack([self.prompt_order(row, user) for row, user in zip(top, users)])

    def prompt_order(self, items: torch.Tensor, user: int, order: int = 0) -> torch.Tensor:
        """The distinct items in the order this user's prompt lists them (seeded by user).

        ``order`` k > 0 gives the k-th alternative order (candidate-order sensitivity and the
        ``candidate_orders`` mean); order 0 is the one every evaluation uses.
        """
        unique = torch.as_tensor(list(dict.fromkeys(items.tolist())), dtype=torch.long)
        return unique[torch.as_tensor(self._permutation(len(unique), user, order))]

    def _permutation(self, n: int, user: int, order: int) -> np.ndarray:
        """The seeded permutation of a user's ``order``-th candidate order."""
        key = [self.seed, user] if order == 0 else [self.seed, user, order]
        return np.random.default_rng(key).permutation(n)

    # ------------------------------------------------------------------ checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What DELRec learns (soft prompt, adapters and their rank state), never the LLM."""
        return {
            k: v.detach().cpu()
            for k, v in self.state_dict().items()
            if k.startswith("soft_prompt.") or any(tag in k for tag in ADAPTER_TAGS)
        }

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state_dict` output; refuses foreign or mis-shaped tensors."""
        expected = self.trainable_state_dict()
        missing, unknown = set(expected) - set(state), set(state) - set(expected)
        if missing or unknown:
            raise ValueError(
                f"Checkpoint does not match this DELRec: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unknown)[:3]} (other LLM, n_soft_tokens or adalora settings?)."
            )
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(
                    f"Checkpoint tensor '{key}' has shape {tuple(tensor.shape)}, this model "
                    f"expects {tuple(expected[key].shape)} (other LLM width or soft-prompt size?)."
                )
        self.load_state_dict(state, strict=False)


def realigned(scores: torch.Tensor, listed: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Scores of candidates listed in ``listed``'s order, moved to ``candidates``' column order."""
    positions = (listed.unsqueeze(1) == candidates.unsqueeze(2)).float().argmax(dim=2)
    return scores.gather(1, positions.to(scores.device))


def _group_starts(users: torch.Tensor, seqs: torch.Tensor) -> list[int]:
    """First row of each run of rows that share user and history."""
    change = (users[1:] != users[:-1]) | (seqs[1:] != seqs[:-1]).any(dim=1)
    return [0] + (torch.nonzero(change).flatten() + 1).tolist()


def _scatter_back(scores: torch.Tensor, candidates: torch.Tensor, items: torch.Tensor, bounds) -> torch.Tensor:
    """Per-row scores from per-group candidate scores (a repeated item gets its score)."""
    out = torch.empty(len(items), device=scores.device)
    for row, (a, b) in enumerate(bounds):
        lookup = {int(c): j for j, c in enumerate(candidates[row].tolist()) if c > 0}
        cols = torch.as_tensor([lookup[int(i)] for i in items[a:b]], device=scores.device)
        out[a:b] = scores[row, cols]
    return out
