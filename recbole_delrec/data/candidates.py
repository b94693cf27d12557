"""Candidate sets: the true item plus negatives the user has never interacted with.

RecBole's sequential sampler only excludes the target, so its negatives can be history items
or repeats, and they are redrawn at every evaluation.  DELRec lists candidates in a prompt,
so here the negatives are uniform over items outside the user's known history, without
repeats, and evaluation candidates are a pure function of ``(seed, phase, user)``: the same
in every evaluation of a run, for DELRec, the teacher and every baseline alike.

How many candidates a prompt lists has one owner, RecBole's ``eval_args.mode``: it is decided
once (:func:`candidates_per_prompt`, called by :func:`check_candidates`), written to
``n_candidates``, and read from there.  The valid/test sets of a run are first-class
(:class:`CandidateSets`): saved in the run folder and loadable by a later run
(``candidates_path``, parsed once per data set: :func:`saved_candidate_sets`) so that it
scores exactly the same sets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recbole_delrec.data.fields import item_seq_field
from recbole_delrec.runs.artifacts import atomic_write

if TYPE_CHECKING:  # the protocol (candidates_per_prompt) is read without RecBole by the benchmarks
    from recbole.data.dataset import Dataset

PHASES = {"train": 0, "valid": 1, "test": 2, "stage1": 3}
EVAL_PHASES = ("valid", "test")
CANDIDATES_FILE = "candidates.parquet"
_UNIFORM = re.compile(r"uni(\d+)")


def eval_modes(config) -> dict[str, str]:
    """RecBole's evaluation mode per phase (a plain ``mode: uni19`` means both phases)."""
    mode = config["eval_args"]["mode"]
    return {phase: mode for phase in EVAL_PHASES} if isinstance(mode, str) else dict(mode)


def _count(phase: str, mode: str, config) -> int:
    """Candidates per prompt that one phase's mode asks for."""
    if mode == "full":
        return config["rerank_k"]
    uniform = _UNIFORM.fullmatch(str(mode))
    if uniform:
        return int(uniform.group(1)) + 1
    raise ValueError(
        f"eval_args.mode ({phase}: '{mode}') is not a protocol DELRec can honour: it lists each user's "
        f"candidates in a prompt and draws their negatives uniformly outside the user's history "
        f"('{mode}' would be {'popularity-sampled' if str(mode).startswith('pop') else 'another protocol'}). "
        f"Use `uniN` (N negatives + the target, e.g. uni19) or `full` (re-rank the teacher's top `rerank_k`)."
    )


def candidates_per_prompt(config) -> int:
    """How many candidates every prompt lists, the target included: the one place that decides.

    RecBole's ``eval_args.mode`` owns the number (``uniN``: N + 1, ``full``: ``rerank_k``);
    ``n_candidates`` is kept for compatibility and may only repeat it.  Training prompts list
    as many candidates as evaluation prompts, so the valid and test modes must agree.
    """
    counts = {phase: _count(phase, mode, config) for phase, mode in eval_modes(config).items()}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"eval_args.mode asks for {counts['valid']} candidates per prompt in validation "
            f"({eval_modes(config)['valid']}) and {counts['test']} in test ({eval_modes(config)['test']}): "
            f"DELRec trains on prompts of one size, so make them agree (one mode, or `full` with a "
            f"`rerank_k` equal to the uniN count + 1)."
        )
    count = counts["test"]
    explicit = config["n_candidates"]
    if explicit is not None and explicit != count:
        raise ValueError(
            f"n_candidates: {explicit} disagrees with eval_args.mode '{eval_modes(config)['test']}', which means "
            f"{count} candidates per prompt: remove `n_candidates` (the mode decides), or set the mode to "
            f"uni{explicit - 1} for {explicit} candidates."
        )
    return count


def check_candidates(config) -> None:
    """Check-time (before any data is read): the candidate settings agree and the file exists.

    The resolved count is written back into ``n_candidates``: everything after this reads it
    there (the stage-1 soft-prompt key, the candidate files, ``config.json``), never deciding
    it again.
    """
    config["n_candidates"] = candidates_per_prompt(config)
    path = config["candidates_path"]
    if path is None:
        return
    if "full" in eval_modes(config).values():
        raise ValueError(
            f"candidates_path '{path}' gives fixed candidate sets, but eval_args.mode is 'full' (the teacher's "
            f"top `rerank_k` are re-ranked, no fixed sets): use a `uniN` mode or remove `candidates_path`."
        )
    candidates_file(path)


def candidates_file(path: str | Path) -> Path:
    """The candidate file of ``candidates_path``: the file itself, or the one in a run folder."""
    path = Path(path)
    file = path / CANDIDATES_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"candidates_path '{path}' is neither a candidates file nor a run folder with "
            f"{CANDIDATES_FILE} in it: point it at a finished run's folder or its {CANDIDATES_FILE}."
        )
    return file


class CandidateSampler:
    """Draws ``n_candidates - 1`` negatives per (user, target) outside the user's history and
    unlike the target: an item whose title reads as the target's (``alike``: groups of items
    the LLM cannot tell apart, :meth:`TitleTokens.alike`) is never its negative, or the
    prompt would list the answer twice and only a tie-break could rank the target first."""

    def __init__(self, history: sp.csr_matrix, n_items: int, n_candidates: int, seed: int,
                 alike: Sequence[Sequence[int]] = ()) -> None:
        if not 2 <= n_candidates <= n_items - 1:
            raise ValueError(
                f"{n_candidates} candidates per prompt (from eval_args.mode) must be between 2 and the "
                f"catalogue size ({n_items - 1} items): use a smaller `uniN` mode (or `rerank_k` for `full`)."
            )
        self.history = history
        self.n_items = n_items
        self.n_candidates = n_candidates
        self.seed = seed
        self.twins = {item: [other for other in group if other != item] for group in alike for item in group}

    @classmethod
    def from_dataset(cls, dataset: Dataset, n_candidates: int, seed: int,
                     alike: Sequence[Sequence[int]] = ()) -> "CandidateSampler":
        """User-by-item history from every prefix and target in ``dataset``."""
        feat = dataset.inter_feat
        lists = feat[item_seq_field(dataset)].numpy()
        users = feat[dataset.uid_field].numpy()
        rows = np.concatenate([np.repeat(users, lists.shape[1]), users])
        cols = np.concatenate([lists.reshape(-1), feat[dataset.iid_field].numpy()])
        keep = cols > 0
        matrix = sp.csr_matrix(
            (np.ones(keep.sum(), dtype=np.bool_), (rows[keep], cols[keep])),
            shape=(dataset.user_num, dataset.item_num),
        )
        return cls(matrix, dataset.item_num, n_candidates, seed, alike)

    def known(self, user: int, history: np.ndarray) -> np.ndarray:
        """Items the user is known to have: the stored history plus this row's history."""
        stored = self.history.indices[self.history.indptr[user] : self.history.indptr[user + 1]]
        return np.union1d(stored, history[history > 0])

    def negatives(self, user: int, target: int, history: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``n_candidates - 1`` distinct items, none of them the target, its title's twin or a
        known item.

        If the user knows nearly the whole catalogue, known items (never the target) fill up.
        """
        need = self.n_candidates - 1
        banned = np.union1d(self.known(user, history), [0, target, *self.twins.get(target, ())])
        pool_size = self.n_items - len(banned)
        if pool_size < need:
            pool = np.setdiff1d(np.arange(1, self.n_items), [target])
            return rng.choice(pool, need, replace=False)
        picked: list[int] = []
        seen = set(banned.tolist())
        while len(picked) < need:
            for item in rng.integers(1, self.n_items, size=2 * need).tolist():
                if item not in seen and len(picked) < need:
                    seen.add(item)
                    picked.append(item)
        return np.asarray(picked, dtype=np.int64)

    def rng(self, phase: str, user: int) -> np.random.Generator:
        """The generator of one user's evaluation candidates: fixed for the whole run."""
        return np.random.default_rng([self.seed, PHASES[phase], int(user)])

    def candidates(
        self,
        users: torch.Tensor,
        targets: torch.Tensor,
        histories: torch.Tensor,
        phase: str,
        rng: np.random.Generator | None = None,
    ) -> torch.Tensor:
        """``(B, n_candidates)`` item ids, the target in column 0.

        With ``rng`` (training) negatives are fresh draws; without it they are the user's
        fixed evaluation candidates of ``phase``.
        """
        rows = []
        for user, target, history in zip(users.tolist(), targets.tolist(), histories.cpu().numpy()):
            gen = rng if rng is not None else self.rng(phase, user)
            rows.append(np.concatenate([[target], self.negatives(user, target, history, gen)]))
        return torch.as_tensor(np.stack(rows), dtype=torch.long)


Draw = Callable[[int, int, np.ndarray, str], np.ndarray]


class CandidateSets:
    """Each evaluated user's candidates in prompt order, per phase: drawn once, saved, reloaded.

    ``sets[phase][user] = (target, items)`` with internal RecBole ids.  A drawn set grows a
    phase from ``draw(user, target, history, phase)`` the first time that phase is asked for;
    a loaded set (``candidates_path``) never draws, so every user must be in the file.
    """

    def __init__(self, draw: Draw | None, sets: Mapping[str, dict[int, tuple[int, np.ndarray]]] | None = None,
                 source: str = "drawn") -> None:
        self.draw = draw
        self.sets: dict[str, dict[int, tuple[int, np.ndarray]]] = {k: dict(v) for k, v in (sets or {}).items()}
        self.source = source

    @classmethod
    def drawn(cls, sampler: CandidateSampler, order: Callable[[torch.Tensor, int], torch.Tensor]) -> "CandidateSets":
        """Sets drawn by ``sampler`` (target first) and put in ``order`` (the prompt's order)."""
        def draw(user: int, target: int, history: np.ndarray, phase: str) -> np.ndarray:
            row = sampler.candidates(torch.tensor([user]), torch.tensor([target]), torch.as_tensor(history[None]), phase)
            return order(row[0], user).numpy()

        return cls(draw)

    def cover(self, dataset: Dataset, phase: str) -> None:
        """Make sure every (user, target) row of the split ``dataset`` has its set."""
        feat = dataset.inter_feat
        users, targets = feat[dataset.uid_field].numpy(), feat[dataset.iid_field].numpy()
        histories = feat[item_seq_field(dataset)].numpy()
        known = self.sets.setdefault(phase, {})
        for user, target, history in zip(users.tolist(), targets.tolist(), histories):
            if user not in known and self.draw is not None:
                known[user] = (target, self.draw(user, target, history, phase))

    def rows(self, phase: str, users: torch.Tensor, targets: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` item ids of these users' sets, in prompt order."""
        known = self.sets.setdefault(phase, {})
        out = []
        for user, target, history in zip(users.tolist(), targets.tolist(), histories.cpu().numpy()):
            if user not in known:
                if self.draw is None:
                    raise ValueError(f"{self.source} has no {phase} candidates for user id {user}: "
                                     f"it was saved from another data set or split.")
                known[user] = (target, self.draw(user, target, history, phase))
            if known[user][0] != target:
                raise ValueError(f"{self.source}: the {phase} target of user id {user} is item id {known[user][0]}, "
                                 f"this split's is {target}: the file belongs to another split of the data.")
            out.append(known[user][1])
        return torch.as_tensor(np.stack(out), dtype=torch.long)

    def frame(self, dataset: Dataset) -> pd.DataFrame:
        """The sets as atomic-file tokens: phase, user, target, candidates (prompt order)."""
        records = [
            {"phase": phase, "user": user, "target": target, "candidates": items}
            for phase in EVAL_PHASES
            for user, (target, items) in sorted(self.sets.get(phase, {}).items())
        ]
        frame = pd.DataFrame(records, columns=["phase", "user", "target", "candidates"])
        frame["user"] = [str(t) for t in dataset.id2token(dataset.uid_field, frame["user"].to_numpy(dtype=np.int64))]
        frame["target"] = [str(t) for t in dataset.id2token(dataset.iid_field, frame["target"].to_numpy(dtype=np.int64))]
        frame["candidates"] = [[str(t) for t in dataset.id2token(dataset.iid_field, np.asarray(c))] for c in frame["candidates"]]
        return frame

    def save(self, path: str | Path, dataset: Dataset) -> Path:
        """The sets as a parquet file, atomically."""
        frame = self.frame(dataset)
        return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset, n_candidates: int) -> "CandidateSets":
        """Sets saved by :meth:`save` (``candidates_path``), checked against ``dataset``."""
        file = candidates_file(path)
        frame = pd.read_parquet(file)
        missing = {"phase", "user", "target", "candidates"} - set(frame.columns)
        if missing:
            raise ValueError(f"candidates_path '{file}' lacks the columns {sorted(missing)}: it is no saved candidates file.")
        sets: dict[str, dict[int, tuple[int, np.ndarray]]] = {}
        for row in frame.itertuples(index=False):
            if len(row.candidates) != n_candidates:
                raise ValueError(
                    f"candidates_path '{file}' lists {len(row.candidates)} candidates for user '{row.user}' "
                    f"({row.phase}), eval_args.mode asks for {n_candidates}: use the mode the file was saved with."
                )
            user = _ids(dataset, dataset.uid_field, [row.user], file)[0]
            target, *_ = _ids(dataset, dataset.iid_field, [row.target], file)
            sets.setdefault(row.phase, {})[user] = (target, np.asarray(_ids(dataset, dataset.iid_field, list(row.candidates), file)))
        return cls(None, sets, source=f"candidates_path '{file}'")


def saved_candidate_sets(config, dataset: Dataset) -> CandidateSets | None:
    """The sets of ``candidates_path`` (None without one), checked against ``dataset``.

    The file is parsed once per data set and kept on it as ``saved_candidate_sets``: RecBole's
    splits are shallow copies of the loaded data set, so the check before the split
    (``DELRec.check_dataset``) and the trainer's evaluation share one parse.
    """
    if not config["candidates_path"]:
        return None
    if getattr(dataset, "saved_candidate_sets", None) is None:
        dataset.saved_candidate_sets = CandidateSets.load(config["candidates_path"], dataset, config["n_candidates"])
    return dataset.saved_candidate_sets


def _ids(dataset: Dataset, field: str, tokens: list[str], file: Path) -> list[int]:
    """Internal ids of atomic-file tokens; unknown tokens name the file and the field."""
    unknown = [t for t in tokens if t not in dataset.field2token_id[field]]
    if unknown:
        raise ValueError(
            f"candidates_path '{file}': {field} token(s) {unknown[:5]} are not in data set "
            f"'{dataset.dataset_name}': the file was saved from another data set (or other filtering)."
        )
    return [dataset.field2token_id[field][t] for t in tokens]
