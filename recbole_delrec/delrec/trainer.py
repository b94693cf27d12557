"""``DELRecTrainer``: RecBole's Trainer, running teacher -> stage 1 -> stage 2.

What it changes in RecBole's loop, each through one of RecBole's own hooks:

* ``fit`` first gets the teacher (trained on the training split, or reused), then runs
  stage 2 on each user's latest training prefixes with RecBole's own epoch loop;
* AdaLoRA's rank allocation runs after every optimizer step (an optimizer post-step hook,
  so RecBole's ``_train_epoch`` is used as it is);
* evaluation (``evaluate``) ranks each user's true item among the run's fixed, clean
  candidate sets (no history items, no repeats, the same in every evaluation; saved with the
  run, or loaded from ``candidates_path``), or over the catalogue in full ranking; any other
  model (the teacher, a baseline) is scored on exactly those sets by :meth:`score`;
* checkpoints hold DELRec's trainable weights only, saved atomically and loaded safely.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.trainer import Trainer
from recbole.utils import init_seed, set_color

from recbole_delrec import distributed
from recbole_delrec.runs.artifacts import load_tensors, save_tensors
from recbole_delrec.delrec.distill.artifact import prepare_soft_prompt
from recbole_delrec.delrec.model import STAGES
from recbole_delrec.llm.adapters import allocate_ranks, base_state_dict, load_rank_state, merged_adapters, rank_state
from recbole_delrec.data.candidates import CandidateSets, saved_candidate_sets
from recbole_delrec.data.prefixes import stage2_prefixes
from recbole_delrec.evaluation import scoring
from recbole_delrec.evaluation.cost import StageCosts
from recbole_delrec.evaluation.scoring import Scored
from recbole_delrec.runs.folder import RunDirectory
from recbole_delrec.teacher import load_or_train_teacher


class DELRecTrainer(Trainer):
    """Trainer for :class:`~recbole_delrec.delrec.model.DELRec`."""

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        self.global_step = 0
        self.optimizer.register_step_post_hook(self._after_step)
        self.delrec = model
        self.timings: dict[str, float] = {}
        self.run: RunDirectory | None = None
        self._epoch_seconds: list[float] = []
        self.valid_history: list[dict[str, float]] = []
        self.loss_history: list[float] = []  # mean stage-2 training loss per epoch
        self._resume: dict | None = None
        self._candidate_sets: CandidateSets | None = None
        self.costs = StageCosts(self.device)  # seconds and peak memory per stage

    def _build_optimizer(self, **kwargs):
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        return super()._build_optimizer(**kwargs)

    def _after_step(self, optimizer, args, kwargs) -> None:
        """AdaLoRA budget update: after ``step`` (gradients still there), before ``zero_grad``."""
        allocate_ranks(self.model.llm, self.global_step)
        self.global_step += 1

    # ------------------------------------------------------------------ training
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.run is None:  # rank 0 makes the folder, every rank uses it
            created = RunDirectory.create(self.config, self.delrec.llm_source).path if distributed.rank() == 0 else None
            self.run = RunDirectory(distributed.from_rank0(created))
        self.saved_model_file = str(self.run.best)
        self.costs.start()
        if self.model.teacher is None:
            self.model.attach_teacher(load_or_train_teacher(self.config, train_data, valid_data))
        if self._writes:
            save_tensors({"state_dict": self.model.teacher.state_dict()}, self.run.teacher)
        self.timings["teacher_seconds"] = self.costs.stop("teacher")
        self.costs.start()
        self._reseed()  # later stages must not depend on whether earlier ones were cached
        self.stage1_result = prepare_soft_prompt(self.delrec, self.config, train_data._dataset, self.stage, self._writes)
        distributed.check_synchronised(self.delrec.soft_prompt.state_dict(), "The stage-1 soft prompt")
        self.timings["stage1_seconds"] = self.costs.stop("stage1")
        if self.stage == "1":
            return self.stage1_result.get("fidelity_distilled", -1), self.stage1_result
        stage2 = self._latest_prefix_loader(train_data)
        self.logger.info(
            set_color("Stage 2", "green")
            + f": {len(stage2._dataset)} training prefixes "
            f"({self.config['train_prefixes_per_user']} latest per user), AdaLoRA on {sorted(self.delrec.llm.peft_config['default'].target_modules)}"
        )
        self._reseed()
        if self._resume is not None:
            self._restore_random_state(stage2)
        self.costs.start()
        result = super().fit(stage2, valid_data, verbose, saved, show_progress, self._after_validation(stage2, callback_fn))
        self.timings["stage2_seconds"] = self.costs.stop("stage2")
        distributed.check_synchronised(self.delrec.trainable_state_dict(), "DELRec's trained weights")
        self.export()
        distributed.barrier()  # rank 0's last checkpoint and export are on disk for every rank
        return result

    @property
    def _writes(self) -> bool:
        """One process per machine writes run files (RecBole's rule: ``local_rank`` 0).

        Runs over several machines need ``checkpoint_dir`` on a file system they share: the
        writers then write the same (synchronised) tensors, atomically.
        """
        return self.config["local_rank"] == 0

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """RecBole's epoch, timed: the LLM's training time per epoch is a reported figure."""
        start = time.time()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.loss_history.append(float(loss) / len(train_data))
        self._epoch_seconds.append(time.time() - start)
        self.timings["stage2_seconds_per_epoch"] = sum(self._epoch_seconds) / len(self._epoch_seconds)
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        """RecBole's validation, remembered per epoch: how DELRec moves with more training."""
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.valid_history.append({k: float(v) for k, v in result.items()})
        return score, result

    def _reseed(self) -> None:
        init_seed(self.config["seed"] + self.config["local_rank"], self.config["reproducibility"])
        self.delrec.train_rng = np.random.default_rng(self.config["seed"])

    def _restore_random_state(self, loader) -> None:
        torch.set_rng_state(self._resume["torch_rng"])
        self.delrec.train_rng.bit_generator.state = self._resume["train_rng"]
        loader.generator.set_state(self._resume["loader_rng"])

    def _after_validation(self, loader, callback_fn):
        """Save the resumable state after every validation, then call the user's callback."""
        def callback(epoch_idx: int, valid_score: float) -> None:
            if self._writes:
                save_tensors(self._training_state(epoch_idx, loader), self.run.last)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
        return callback

    def export(self) -> None:
        """The run's adapter as a PEFT folder, and the scratch LLM it belongs to."""
        if not self._writes or not self.run.best.is_file():
            return
        self.load_checkpoint(self.run.best)
        self.run.save_adapter(self.delrec.llm)
        if self.delrec.llm_is_scratch:
            self.run.save_llm(self.delrec.llm.get_base_model(), self.delrec.tokenizer, base_state_dict(self.delrec.llm))

    @property
    def stage(self) -> str:
        stage = str(self.config["stage"])
        if stage not in STAGES:
            raise ValueError(f"stage '{stage}' is not one of {', '.join(STAGES)}.")
        return stage

    def _latest_prefix_loader(self, train_data) -> TrainDataLoader:
        dataset = stage2_prefixes(train_data._dataset, self.config)
        return TrainDataLoader(self.config, dataset, None, shuffle=self.config["shuffle"])

    # ------------------------------------------------------------------ evaluation
    def candidate_sets(self, dataset) -> CandidateSets:
        """This run's evaluation candidates: those of ``candidates_path`` (as the start-up's check
        parsed them), or drawn (fixed per user) by DELRec's sampler and listed in its prompt
        order.  ``dataset``: any split (ids)."""
        if self._candidate_sets is None:
            self._candidate_sets = (saved_candidate_sets(self.config, dataset)
                                    or CandidateSets.drawn(self.delrec.sampler, self.delrec.prompt_order))
        return self._candidate_sets

    def score(self, model, eval_data, show_progress: bool = False) -> Scored:
        """Any RecBole model (DELRec, the teacher, a baseline) on this run's candidates of
        ``eval_data``'s phase, or the catalogue in full ranking: RecBole's metric dict and
        every user's outcome (gathered from all ranks in a distributed run)."""
        sets = self.candidate_sets(eval_data._dataset)
        with self.scoring_weights(model):
            scored = scoring.score(model, eval_data, sets, self.eval_collector, self.evaluator, self.config["topk"],
                                   show_progress)
        if model is self.delrec:
            model.report_history_cuts()  # a test has no later mode switch to report its prompts
        if self.config["single_spec"]:
            return scored
        result = self._map_reduce(scored.result, len(scored.users))  # weighted by users per rank
        parts = distributed.gathered((scored.users, scored.targets, scored.ranks, scored.top1, scored.candidates))
        arrays = [np.concatenate([part[i] for part in parts]) for i in range(4)]
        return Scored(result, *arrays, candidates=[c for part in parts for c in part[4]])

    def scoring_weights(self, model) -> contextlib.AbstractContextManager:
        """DELRec scores with its adapters merged into the LLM's weights (``llm_merge_adapters``):
        no adapter runs beside its projection; training resumes on the unmerged weights."""
        if model is self.delrec and self.config["llm_merge_adapters"]:
            return merged_adapters(model.llm)
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's ``evaluate`` for DELRec: its weights (``load_best_model``), then :meth:`score`."""
        if not eval_data:
            return None
        if load_best_model:
            self.load_checkpoint(model_file or self.saved_model_file)
        result = self.score(self.model, eval_data, show_progress).result
        self.wandblogger.log_eval_metrics(result, head="eval")
        return result

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """Trainable weights and training state only: megabytes, not the whole LLM."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "model": self.config["model"],
            "epoch": epoch,
            "cur_step": self.cur_step,
            "global_step": self.global_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.trainable_state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        save_tensors(state, path)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def load_checkpoint(self, path: str | Path) -> dict:
        """Load DELRec weights saved by :meth:`_save_checkpoint` (no arbitrary unpickling)."""
        checkpoint = load_tensors(path, self.device)
        if checkpoint.get("model") != self.config["model"]:
            raise ValueError(f"'{path}' is a checkpoint of '{checkpoint.get('model')}', not {self.config['model']}.")
        self.model.load_trainable_state_dict(checkpoint["state_dict"])
        self.logger.info(f"Loading DELRec weights from {path}")
        return checkpoint

    def _training_state(self, epoch: int, loader) -> dict:
        """Everything an interrupted stage 2 needs to continue exactly where it was."""
        return {
            "model": self.config["model"], "epoch": epoch, "cur_step": self.cur_step,
            "global_step": self.global_step, "best_valid_score": float(self.best_valid_score),
            "best_valid_result": {k: float(v) for k, v in (self.best_valid_result or {}).items()},
            "state_dict": self.delrec.trainable_state_dict(), "optimizer": self.optimizer.state_dict(),
            "rank_state": rank_state(self.delrec.llm), "torch_rng": torch.get_rng_state(),
            "train_rng": self.delrec.train_rng.bit_generator.state, "loader_rng": loader.generator.get_state(),
            "valid_history": self.valid_history, "loss_history": self.loss_history,
        }

    def resume_checkpoint(self, resume_file):
        """Continue an interrupted stage 2 from a run folder (or its ``last.pth``)."""
        self.run = RunDirectory.resumable(resume_file)
        state = self.load_checkpoint(self.run.last)
        self.start_epoch, self.cur_step = state["epoch"] + 1, state["cur_step"]
        self.global_step, self.best_valid_score = state["global_step"], state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"] or None
        self.optimizer.load_state_dict(state["optimizer"])
        load_rank_state(self.delrec.llm, state["rank_state"])
        # the epochs before the interruption: a resumed run reports every epoch, by its number
        # (a last.pth written before these keys resumes with its own epochs only)
        self.valid_history = list(state.get("valid_history", []))
        self.loss_history = list(state.get("loss_history", []))
        self._resume = state  # random generators are restored when stage 2 starts
        self.logger.info(set_color("Resume", "green") + f": {self.run.path} from epoch {self.start_epoch}")
