"""Prompt templates (data files) turned into token ids, with titles tokenised once.

A template is plain text with ``{slots}``.  *Static* slots (the teacher's name, the domain's
wording) are filled once when the builder is made; *dynamic* slots are filled per example:

* ``{soft_prompt}``: ``n_soft`` placeholder positions that :class:`SoftPrompt` overwrites
  in the encoder's input embeddings;
* item-list slots (``{history}``, ``{candidates}``, ``{demo_history}``, ...): titles joined
  by ``"; "``;
* everything else: one item's title.

Literal pieces and every title are tokenised once, so building a batch of prompts is list
concatenation, not tokenisation: that keeps prompt building off the training hot path.
Prompts longer than ``max_tokens`` lose their *oldest* history titles first (slots whose
name ends in ``history``); candidates are never cut.  :meth:`PromptBuilder.longest` bounds
the longest prompt a catalogue can produce (checked before anything trains), and the
builder counts the prompts that lost history (:class:`HistoryCuts`), so the log can say so.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

SOFT_SLOT = "soft_prompt"
CANDIDATES_SLOT = "candidates"
HISTORY_SUFFIX = "history"
#: The dynamic slots each DELRec task fills (beside ``{soft_prompt}``); a template must have
#: all of them and no slot other than these and its domain's wording.
TASK_SLOTS = {
    "lsr": ("history", CANDIDATES_SLOT),
    "rps": ("history", CANDIDATES_SLOT),
    "ta": ("demo_history", "demo_prediction", "demo_answer", "query_history", "query_prediction", CANDIDATES_SLOT),
}
#: Slots a task's template may leave out.  An LSR prompt without ``{candidates}`` shows the
#: history alone, and each candidate is scored by its title's likelihood after it (pointwise),
#: instead of being picked from a list that the LLM reads in an order: SmolLM2 zero-shot picks
#: the first listed candidate for a third of users (``BENCHMARKS.md``).
OPTIONAL_SLOTS = {"lsr": frozenset({CANDIDATES_SLOT})}
LIST_SEPARATOR = "; "
SOFT_MARKER = "[SOFT PROMPT x{n}]"
_SLOT = re.compile(r"\{(\w+)\}")

Encode = Callable[[str], list[int]]
SlotValue = int | Sequence[int]


@dataclass(frozen=True)
class PromptIds:
    """One encoder prompt: token ids, and where the soft prompt starts (-1: none)."""

    input_ids: list[int]
    soft_start: int


@dataclass
class HistoryCuts:
    """What fitting prompts into ``max_tokens`` cost: prompts built, how many lost history
    titles, and how many titles they lost in all."""

    prompts: int = 0
    cut: int = 0
    titles: int = 0


def template_dir(custom: str | None = None) -> Path:
    """Where templates live: a user's ``prompt_template_dir`` or the packaged ones."""
    if custom:
        path = Path(custom)
        if not path.is_dir():
            raise FileNotFoundError(f"prompt_template_dir '{custom}' is not a directory.")
        return path
    return Path(str(resources.files("recbole_delrec.prompts") / "templates"))


def template_path(task: str, domain: str, custom_dir: str | None = None) -> Path:
    """``<dir>/<domain>/<task>.txt`` if present, else ``<dir>/<task>.txt``."""
    root = template_dir(custom_dir)
    for path in (root / domain / f"{task}.txt", root / f"{task}.txt"):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"No prompt template '{task}.txt' in {root} (nor in its '{domain}' folder): add "
        f"{task}.txt to prompt_template_dir (the packaged one is a model to copy), or set "
        f"`prompt_template_dir: ~` for the packaged templates."
    )


def load_template(task: str, domain: str, custom_dir: str | None = None) -> str:
    """The text of :func:`template_path`."""
    return template_path(task, domain, custom_dir).read_text(encoding="utf-8").strip()


def check_template(task: str, template: str, static: Mapping[str, str], where: Path | str) -> None:
    """A template must have every slot its task fills (but :data:`OPTIONAL_SLOTS`) and no slot
    nobody fills.

    Checked before anything trains: a missing ``{candidates}`` would otherwise surface as an RPS
    prompt without candidates, an unknown slot as a ``KeyError`` in the middle of stage 1.
    """
    found = set(_SLOT.findall(template))
    dynamic = {SOFT_SLOT, *TASK_SLOTS[task]}
    needed = dynamic - OPTIONAL_SLOTS.get(task, frozenset())
    missing = needed - found
    unknown = found - dynamic - set(static)
    problems = [f"lacks {_braced(missing)}"] if missing else []
    problems += [f"has unknown {_braced(unknown)}"] if unknown else []
    if problems:
        raise ValueError(
            f"Prompt template {where} {' and '.join(problems)}: a {task} template needs "
            f"{_braced(needed)} and may use the wording {_braced(static)}. "
            f"Fix the file in prompt_template_dir (the packaged {task}.txt is a model), or set "
            f"`prompt_template_dir: ~`."
        )


def domain_words(domain: str) -> dict[str, str]:
    """The wording of one domain (``watched``/``played``/``purchased``, ...)."""
    table = yaml.safe_load(
        (resources.files("recbole_delrec.prompts") / "domains.yaml").read_text(encoding="utf-8")
    )
    if domain not in table:
        raise ValueError(f"Unknown domain '{domain}': set `domain` to one of {sorted(table)}.")
    return dict(table[domain])


class PromptBuilder:
    """Fills one task's template with item titles, at the level of token ids."""

    def __init__(
        self,
        template: str,
        static: Mapping[str, str],
        encode: Encode,
        item_token_ids: Sequence[Sequence[int]],
        n_soft: int,
        max_tokens: int,
        pad_id: int,
        end_ids: Sequence[int],
    ) -> None:
        """``encode`` tokenises a literal piece as it reads inside the prompt, and
        ``item_token_ids`` are the titles tokenised the same way (the LLM backbone's
        ``encode_piece``/``prompt_titles``); ``end_ids`` close every prompt (T5's ``</s>``;
        nothing for a causal LM, whose answer follows)."""
        self.pieces = _split(_fill_static(template, static))
        self.slots = [p for kind, p in self.pieces if kind == "slot"]
        self.n_soft, self.max_tokens = n_soft, max_tokens
        self.literal_ids = {i: encode(self._shown(i)) for i, (kind, _) in enumerate(self.pieces) if kind == "text"}
        self.item_ids = item_token_ids
        self.sep_ids = encode(LIST_SEPARATOR.strip())
        self.pad_id, self.end_ids = pad_id, list(end_ids)
        self.cuts = HistoryCuts()

    def _shown(self, index: int) -> str:
        """A literal piece as the prompt shows it: after an empty soft prompt (``n_soft_tokens: 0``)
        its leading spaces go, so an LLM reads "Following ...", not " Following ..."."""
        text = self.pieces[index][1]
        after_soft = index > 0 and self.pieces[index - 1] == ("slot", SOFT_SLOT)
        return text.lstrip(" ") if after_soft and not self.n_soft else text

    def build(self, **values: SlotValue) -> PromptIds:
        """Token ids of the prompt for these slot values (item ids), truncated to fit.

        Only built prompts count in :meth:`take_cuts` (not ``render``/``fitted``, which
        re-read prompts already built), so the logged losses count each prompt once."""
        values, dropped = self._truncated(values)
        self.cuts.prompts += 1
        self.cuts.cut += bool(dropped)
        self.cuts.titles += dropped
        ids: list[int] = []
        soft_start = -1
        for i, (kind, piece) in enumerate(self.pieces):
            if kind == "text":
                ids += self.literal_ids[i]
            elif piece == SOFT_SLOT:
                soft_start = len(ids) if self.n_soft else -1
                ids += [self.pad_id] * self.n_soft
            else:
                ids += self._slot_ids(values[piece])
        return PromptIds(ids + self.end_ids, soft_start)

    def render(self, titles: Sequence[str], **values: SlotValue) -> str:
        """The same prompt as readable text (soft prompt shown as a marker): for --explain."""
        values = self._truncated(values)[0]
        out = []
        for i, (kind, piece) in enumerate(self.pieces):
            if kind == "text":
                out.append(self._shown(i))
            elif piece == SOFT_SLOT:
                out.append(SOFT_MARKER.format(n=self.n_soft) if self.n_soft else "")
            else:
                items = values[piece]
                items = [items] if isinstance(items, int) else items
                out.append(LIST_SEPARATOR.join(titles[i] for i in items))
        return "".join(out).strip()

    def length(self, **values: SlotValue) -> int:
        """Token length of :meth:`build`'s prompt, counted without assembling it (and not
        counted as a built prompt): batches are sorted and bucketed by it."""
        return self._length(self._truncated(values)[0])

    def fitted(self, **values: SlotValue) -> dict[str, SlotValue]:
        """The slot values the prompt really shows (oldest history dropped to fit): for records."""
        return self._truncated(values)[0]

    def _slot_ids(self, value: SlotValue) -> list[int]:
        if isinstance(value, int):
            return list(self.item_ids[value])
        ids: list[int] = []
        for n, item in enumerate(value):
            ids += (self.sep_ids if n else []) + list(self.item_ids[item])
        return ids

    def longest(self, n_candidates: int) -> int:
        """An upper bound on this builder's prompt length after history truncation.

        ``n_candidates`` of the catalogue's longest titles, the longest title in every other
        slot, and one item per history slot (truncation stops there): whatever the history,
        no prompt needs more, so if this fits ``max_tokens``, :meth:`build` never fails.
        """
        lengths = sorted((len(ids) for ids in self.item_ids[1:]), reverse=True)
        total = self._fixed()
        for name in self.slots:
            if name == SOFT_SLOT:
                total += self.n_soft
            elif name == CANDIDATES_SLOT:
                total += sum(lengths[:n_candidates]) + (n_candidates - 1) * len(self.sep_ids)
            else:
                total += lengths[0]
        return total

    def take_cuts(self) -> HistoryCuts:
        """The history cuts counted since the last call (the counter starts again)."""
        cuts, self.cuts = self.cuts, HistoryCuts()
        return cuts

    def _fixed(self) -> int:
        """Tokens of the literal text and the closing tokens."""
        return sum(len(v) for v in self.literal_ids.values()) + len(self.end_ids)

    def _length(self, values: Mapping[str, SlotValue]) -> int:
        slots = sum(
            self.n_soft if name == SOFT_SLOT else len(self._slot_ids(values[name]))
            for name in self.slots
        )
        return self._fixed() + slots

    def _truncated(self, values: Mapping[str, SlotValue]) -> tuple[dict[str, SlotValue], int]:
        """Drop the oldest history titles until the prompt fits ``max_tokens``; also how many.

        Counts the tokens once and subtracts each dropped title (and its separator), so the
        cost stays linear in the history length however long the histories are.
        """
        missing = [s for s in self.slots if s != SOFT_SLOT and s not in values]
        if missing:
            raise KeyError(f"Prompt slots without a value: {missing}")
        values = {k: (v if isinstance(v, int) else list(v)) for k, v in values.items()}
        excess, dropped = self._length(values) - self.max_tokens, 0
        for name in dict.fromkeys(s for s in self.slots if s.endswith(HISTORY_SUFFIX)):
            items, cut, times = values[name], 0, self.slots.count(name)
            while excess > 0 and len(items) - cut > 1:  # one title and its separator per step
                excess -= times * (len(self.item_ids[items[cut]]) + len(self.sep_ids))
                cut += 1
            values[name], dropped = items[cut:], dropped + cut
        if excess > 0:
            raise ValueError(
                f"The prompt needs {self.max_tokens + excess} tokens with one history item left, more "
                f"than max_prompt_tokens={self.max_tokens}: raise `max_prompt_tokens`, or lower "
                f"`n_candidates`, `n_soft_tokens` or `max_prompt_title_tokens`."
            )
        return values, dropped


def _braced(names) -> str:
    return ", ".join("{" + name + "}" for name in sorted(names))


def _fill_static(template: str, static: Mapping[str, str]) -> str:
    """Substitute the static slots, leaving the dynamic ``{slots}`` in place."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    return template.format_map({n: static.get(n, "{" + n + "}") for n in names})


def _split(template: str) -> list[tuple[str, str]]:
    """``[("text", ...), ("slot", name), ...]`` in template order; empty texts dropped."""
    pieces: list[tuple[str, str]] = []
    for n, part in enumerate(_SLOT.split(template)):
        if n % 2:
            pieces.append(("slot", part))
        elif part:
            pieces.append(("text", part))
    return pieces
