"""``DELRecTrainer``: RecBole's Trainer, running teacher -> stage 1 -> stage 2.

What it changes in RecBole's loop, each through one of RecBole's own hooks:

* ``fit`` first gets the teacher (trained on the training split, or reused), then runs
  stage 2 on each user's latest training prefixes with RecBole's own epoch loop;
* AdaLoRA's rank allocation runs after every optimizer step (an optimizer post-step hook,
  so RecBole's ``_train_epoch`` is used as it is);
* sampled evaluation (``_neg_sample_batch_eval``) ranks each user's true item among fixed,
  clean candidates (no history items, no repeats, the same in every evaluation), and the
  teacher can be scored on exactly those candidates;
* checkpoints hold DELRec's trainable weights only, saved atomically and loaded safely.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils import init_seed, set_color

from recbole_delrec import distributed
from recbole_delrec.runs.artifacts import fingerprint, load_tensors, save_tensors
from recbole_delrec.delrec.distill import SoftPromptDistiller
from recbole_delrec.llm.adapters import allocate_ranks, base_state_dict, load_rank_state, rank_state
from recbole_delrec.llm.backbone import SCRATCH
from recbole_delrec.data.prefixes import latest_prefixes
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
        start = time.time()
        if self.model.teacher is None:
            self.model.attach_teacher(load_or_train_teacher(self.config, train_data, valid_data))
        if self._writes:
            save_tensors({"state_dict": self.model.teacher.state_dict()}, self.run.teacher)
        self.timings["teacher_seconds"] = time.time() - start
        start = time.time()
        self._reseed()  # later stages must not depend on whether earlier ones were cached
        self.stage1_result = self._prepare_soft_prompt(train_data._dataset)
        distributed.check_synchronised(self.delrec.soft_prompt.state_dict(), "The stage-1 soft prompt")
        self.timings["stage1_seconds"] = time.time() - start
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
        start = time.time()
        result = super().fit(stage2, valid_data, verbose, saved, show_progress, self._after_validation(stage2, callback_fn))
        self.timings["stage2_seconds"] = time.time() - start
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
        if self.delrec.llm_source == SCRATCH:
            self.run.save_llm(self.delrec.llm.get_base_model(), self.delrec.tokenizer, base_state_dict(self.delrec.llm))

    @property
    def stage(self) -> str:
        stage = str(self.config["stage"])
        if stage not in ("1", "2", "all"):
            raise ValueError(f"stage '{stage}' is not one of 1, 2, all.")
        return stage

    def _prepare_soft_prompt(self, dataset) -> dict:
        """Stage 1, or the soft prompt a previous run distilled with the same settings."""
        prompt, config = self.model.soft_prompt, self.config
        if prompt.n_tokens == 0:
            return {}
        meta = soft_prompt_meta(config, dataset, self.model.llm_source)
        path = Path(config["soft_prompt_path"] or soft_prompt_path(config, meta))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Parallel runs with the same settings distil it once; in a distributed run rank 0 holds
        # the lock for all its ranks (they distil together, and rank 0 writes).
        with FileLock(f"{path}.lock") if self._writes else nullcontext():
            return self._load_or_distil(path, meta, dataset)

    def _load_or_distil(self, path: Path, meta: dict, dataset) -> dict:
        prompt, config = self.model.soft_prompt, self.config
        if distributed.from_rank0(path.is_file()):
            stored = prompt.load(path, meta)
            self.logger.info(set_color("Stage 1", "green") + f": reusing soft prompt {path}")
            return stored.get("result", {})
        if config["soft_prompt_path"]:
            raise FileNotFoundError(f"soft_prompt_path '{path}' does not exist.")
        if not config["delrec_tasks"]:
            self.logger.info(set_color("Stage 1", "green") + ": delrec_tasks is empty, the soft prompt stays random")
            return {}
        if self.stage == "2":
            raise ValueError(
                f"stage: 2 needs a distilled soft prompt, and none is saved at {path}: run stage 1 "
                f"first (stage: 1 or all) or set soft_prompt_path."
            )
        result = SoftPromptDistiller(self.model, config).fit(dataset)
        if self._writes:
            prompt.save(path, {**meta, "result": result})
        self.logger.info(set_color("Stage 1", "green") + f": saved soft prompt {path} ({result})")
        return result

    def _latest_prefix_loader(self, train_data) -> TrainDataLoader:
        dataset = latest_prefixes(train_data._dataset, self.config["train_prefixes_per_user"])
        return TrainDataLoader(self.config, dataset, None, shuffle=self.config["shuffle"])

    # ------------------------------------------------------------------ evaluation
    @contextmanager
    def scoring_with(self, model):
        """Evaluate another model (the teacher) with this trainer: same candidates, same metrics."""
        saved, self.model = self.model, model
        try:
            yield
        finally:
            self.model = saved

    def _neg_sample_batch_eval(self, batched_data):
        """Rank each user's true item among that user's fixed clean candidates."""
        interaction, row_idx, positive_u, positive_i = batched_data
        firsts = torch.as_tensor(np.r_[0, np.nonzero(np.diff(row_idx.numpy()))[0] + 1])
        rows = interaction[firsts]
        candidates = self.delrec.sampler.candidates(
            rows[self.config["USER_ID_FIELD"]], rows[self.config["ITEM_ID_FIELD"]],
            rows[self.delrec.ITEM_SEQ], self._phase,
        )
        expanded = rows.repeat_interleave(candidates.shape[1])
        expanded.update(Interaction({self.config["ITEM_ID_FIELD"]: candidates.reshape(-1)}))
        scores = self.model.predict(expanded.to(self.device)).view(candidates.shape)
        full = torch.full((len(firsts), self.tot_item_num), -np.inf, device=self.device)
        full.scatter_(1, candidates.to(self.device), scores.float())
        return interaction, full, positive_u, positive_i

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_checkpoint(model_file or self.saved_model_file)
        self._phase = eval_data._sampler.phase if eval_data._sampler is not None else "test"
        self.model.eval()
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

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
        }

    def resume_checkpoint(self, resume_file):
        """Continue an interrupted stage 2 from a run folder (or its ``last.pth``)."""
        path = Path(resume_file)
        self.run = RunDirectory(path if path.is_dir() else path.parent)
        state = self.load_checkpoint(self.run.last)
        self.start_epoch, self.cur_step = state["epoch"] + 1, state["cur_step"]
        self.global_step, self.best_valid_score = state["global_step"], state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"] or None
        self.optimizer.load_state_dict(state["optimizer"])
        load_rank_state(self.delrec.llm, state["rank_state"])
        self._resume = state  # random generators are restored when stage 2 starts
        self.logger.info(set_color("Resume", "green") + f": {self.run.path} from epoch {self.start_epoch}")


STAGE1_KEYS = ("seed", "teacher_model", "teacher_config", "teacher_checkpoint", "llm_path", "scratch_llm",
               "n_soft_tokens", "delrec_tasks", "stage1_epochs", "stage1_batch_size", "stage1_bucket_window", "stage1_learning_rate",
               "stage1_prefixes_per_user", "stage1_max_examples", "stage1_holdout_users", "teacher_topk", "ta_demo_length",
               "ta_query_length", "rps_loss", "rps_temperature", "stage1_weighting", "n_candidates",
               "history_length", "MAX_ITEM_LIST_LENGTH", "max_title_tokens", "max_prompt_title_tokens", "max_prompt_tokens",
               "domain")


def soft_prompt_meta(config, dataset, llm_source: str) -> dict:
    """What a soft prompt belongs to: checked again whenever one is loaded."""
    return {"dataset": config["dataset"], "teacher": config["teacher_model"], "llm": llm_source,
            "n_items": dataset.item_num, "key": fingerprint({k: config[k] for k in STAGE1_KEYS})}


def soft_prompt_path(config, meta: dict) -> Path:
    llm = meta["llm"].replace("/", "--")
    name = f"soft-prompt-{meta['dataset']}-{meta['teacher']}-{llm}-{meta['key']}.pth"
    return Path(config["checkpoint_dir"]) / name
