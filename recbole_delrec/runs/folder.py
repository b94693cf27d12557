"""One folder per run: everything a DELRec run produces, named for what it is.

``<checkpoint_dir>/DELRec-<dataset>-<teacher>-<llm>-<time>/`` holds

* ``config.json``: the run's configuration as plain values;
* ``best.pth``: the best stage-2 checkpoint (soft prompt + adapters, no frozen LLM);
* ``last.pth``: the latest validated training state, for ``resume``;
* ``adapter/``: the PEFT adapter (``save_pretrained``; ``PeftModel.from_pretrained`` loads it);
* ``llm/``: for the offline scratch T5 only, the frozen base model and its tokenizer, so the
  run can be evaluated again (``load``) without rebuilding them;
* ``teacher.pth``: the teacher's weights; ``result.json``: metrics, rows and cost per model;
* ``candidates.parquet``: the valid/test candidate sets in prompt order (``candidates_path``
  scores another run on exactly these);
* ``records.parquet`` + ``records.json``: one row per test user, every model's rank and top-1
  (:mod:`recbole_delrec.evaluation.records`);
* ``evaluations/<time>/``: each later ``load`` of the run, with its own ``config.json``,
  ``result.json``, candidate sets and records (the run's own are never replaced).

Every file is written atomically (temp file + rename), every tensor file is read with
``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

from recbole.utils import get_local_time

from recbole_delrec.compat import plain
from recbole_delrec.data.candidates import CANDIDATES_FILE
from recbole_delrec.runs.artifacts import atomic_dir, load_tensors, save_json
from recbole_delrec.runs.cache import file_safe


class RunDirectory:
    """Paths and writers of one run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, config, llm_source: str) -> "RunDirectory":
        labels = (config["model"], config["dataset"], config["teacher_model"], llm_source, get_local_time())
        name = "-".join(file_safe(label) for label in labels)
        return cls._with_config(_new_folder(Path(config["checkpoint_dir"]) / name), config)

    def new_evaluation(self, config) -> "RunDirectory":
        """A new folder ``evaluations/<time>/`` inside this run for a later evaluation of it
        (``--load``): its result, records and candidate sets never replace the run's own,
        and it holds its own ``config.json``, so a summary or report reads it like a run."""
        return self._with_config(_new_folder(self.path / "evaluations" / get_local_time()), config)

    @classmethod
    def _with_config(cls, path: Path, config) -> "RunDirectory":
        run = cls(path)
        save_json({"final": plain(config.final_config_dict), "external": plain(config.external_config_dict)}, run.config)
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDirectory":
        run = cls(path)
        if not run.best.is_file():
            raise FileNotFoundError(f"'{path}' is not a finished DELRec run folder (no best.pth in it).")
        return run

    @classmethod
    def resumable(cls, path: str | Path) -> "RunDirectory":
        """The run folder of ``path`` (the folder or its ``last.pth``), which must hold ``last.pth``."""
        path = Path(path)
        run = cls(path if path.is_dir() or path.suffix != ".pth" else path.parent)
        if not run.last.is_file():
            raise FileNotFoundError(f"'{path}' is not an interrupted DELRec run folder (no last.pth in it): --resume "
                                    f"takes the run_dir that a run logged, which keeps last.pth after each epoch.")
        return run

    config = property(lambda self: self.path / "config.json")
    best = property(lambda self: self.path / "best.pth")
    last = property(lambda self: self.path / "last.pth")
    adapter = property(lambda self: self.path / "adapter")
    llm = property(lambda self: self.path / "llm")
    teacher = property(lambda self: self.path / "teacher.pth")
    result = property(lambda self: self.path / "result.json")
    candidates = property(lambda self: self.path / CANDIDATES_FILE)
    records = property(lambda self: self.path / "records.parquet")
    records_meta = property(lambda self: self.path / "records.json")

    def save_adapter(self, peft_model) -> None:
        """``save_pretrained`` of the adapter at its full initial rank.

        PEFT shrinks an AdaLoRA adapter to its rank pattern on save, and on load ignores that
        pattern (its keys carry a ``.lora_E`` suffix the loader does not match), so the scaling
        changes and the reloaded adapter is not the trained one.  Saved at full rank, with the
        pruned singular values already zero, ``PeftModel.from_pretrained`` restores exactly the
        function that was trained.
        """
        config = peft_model.peft_config[peft_model.active_adapter]
        pattern, config.rank_pattern = config.rank_pattern, None
        try:
            atomic_dir(self.adapter, lambda tmp: peft_model.save_pretrained(tmp))
        finally:
            config.rank_pattern = pattern

    def save_llm(self, base_model, tokenizer, state_dict: dict) -> None:
        def write(tmp: Path) -> None:
            base_model.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)

        atomic_dir(self.llm, write)

    def user_values(self) -> dict:
        """The values the run was given (files, dict, command line): enough to rebuild it."""
        return json.loads(self.config.read_text(encoding="utf-8"))["external"]

    def final_values(self) -> dict:
        """Every configuration value the run used, as plain values."""
        return json.loads(self.config.read_text(encoding="utf-8"))["final"]

    def teacher_state(self) -> dict:
        return load_tensors(self.teacher)["state_dict"]


def _new_folder(path: Path) -> Path:
    """Create ``path``, or ``path-2``, ``path-3``... if a parallel run took that second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")
