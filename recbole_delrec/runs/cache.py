"""One cache scheme for every artefact a run reuses instead of remaking it.

The teacher (and any baseline trained like it), the stage-1 soft prompt and TSLRec's
knowledge-enhanced embeddings are expensive, so each is saved under ``checkpoint_dir`` and
found again by its *key*: a hash of everything that determines it (:func:`artifact_key`),

* the resolved configuration values the stage reads (each stage declares them, and a test
  records every ``config[key]`` the stage really reads to prove the declaration complete);
* the prompt template texts it uses (not the folder's name: an edited file is a new input);
* the LLM's identity and dtype (:func:`llm_identity`);
* the training split (:func:`split_fingerprint`): a changed ``.inter``/``.item`` file,
  filter or split is a new artefact, whatever the data set is called.

An unchanged input reuses the artefact; any changed input makes a new one, never a stale
one.  The file name carries a readable label before the key
(``teacher-ml-100k-SASRec-<key>.pth``, :func:`artifact_path`); an LLM name or path enters
any file or folder name through :func:`file_safe` only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from filelock import FileLock

from recbole_delrec import distributed
from recbole_delrec.llm.precision import dtype_name
from recbole_delrec.llm.sources import looks_local, resolve
from recbole_delrec.runs.artifacts import fingerprint

T = TypeVar("T")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def file_safe(name: str) -> str:
    """``name`` (an LLM's hub id or local folder, a data set, a model) as one name component.

    A hub id keeps its organisation the way Hugging Face's own cache spells it
    (``google/flan-t5-xl`` -> ``google--flan-t5-xl``); a local folder is named by its last
    component (``/models/flan-t5-xl/`` -> ``flan-t5-xl``: its full path is in the key); any
    run of other characters that are not portable in file names becomes ``-``.
    """
    text = str(name)
    if looks_local(text):
        text = Path(text).expanduser().resolve().name
    return _UNSAFE.sub("-", text.strip("/").replace("/", "--")) or "-"


def llm_identity(config) -> dict[str, Any]:
    """What the LLM is, for a key: which model, which files, computed in which dtype
    (:meth:`~recbole_delrec.llm.sources.LLMSource.identity`; ``auto`` resolved on this device)."""
    return resolve(config["llm_path"], config["llm_gguf_file"]).identity(dtype_name(config["llm_dtype"], config["device"]))


def split_fingerprint(dataset) -> str:
    """A cheap hash of a RecBole training split and the item table it is read with.

    It covers the split's user, item and time columns, the original tokens behind the user
    and item ids, and every item feature column with its vocabulary (titles, years): a
    changed ``.inter`` or ``.item`` file, a filter or another split changes it; the derived
    item-sequence columns (fixed by these and by ``MAX_ITEM_LIST_LENGTH``) are not read.
    """
    digest = hashlib.sha1()
    fields = [dataset.uid_field, dataset.iid_field, dataset.time_field]
    for field in (f for f in fields if f and f in dataset.inter_feat):
        _hash_column(digest, field, dataset.inter_feat[field], dataset.field2id_token.get(field))
    if dataset.item_feat is not None:
        for field in sorted(dataset.item_feat.columns):
            _hash_column(digest, field, dataset.item_feat[field], dataset.field2id_token.get(field))
    return digest.hexdigest()[:16]


def _hash_column(digest, field: str, column, tokens: Iterable[str] | None) -> None:
    """A column's name, dtype, shape and values, and the vocabulary behind its ids."""
    values = column.numpy() if isinstance(column, torch.Tensor) else np.asarray(column)
    digest.update(field.encode("utf-8"))
    digest.update(str((values.dtype, values.shape)).encode("utf-8"))
    digest.update(np.ascontiguousarray(values).tobytes())
    if tokens is not None:
        digest.update("\x1f".join(map(str, tokens)).encode("utf-8"))


def artifact_key(
    kind: str,
    values: Mapping[str, Any],
    split: str,
    templates: Mapping[str, str] | None = None,
    llm: Mapping[str, Any] | None = None,
) -> str:
    """The key of an artefact of ``kind``: a hash of every input that determines it.

    ``values`` are the resolved configuration values the stage reads (with the identity of
    any artefact it builds on, such as the teacher's file), ``split`` the training split's
    :func:`split_fingerprint`, ``templates`` the prompt texts, ``llm`` its :func:`llm_identity`.
    """
    return fingerprint({"kind": kind, "config": dict(values), "split": split,
                        "templates": dict(templates or {}), "llm": dict(llm or {})})


def artifact_path(checkpoint_dir: str | Path, kind: str, labels: Iterable[str], key: str) -> Path:
    """``<checkpoint_dir>/<kind>-<label>-...-<key>.pth``: readable label, exact key."""
    return Path(checkpoint_dir) / "-".join([kind, *(file_safe(label) for label in labels), key + ".pth"])


def load_or_make(path: Path, load: Callable[[Path], T], make: Callable[[Path], T], collective: bool = False) -> T:
    """``load(path)`` if the artefact exists, else ``make(path)``, which also writes it.

    Under a file lock, so that parallel runs wanting one artefact (Ray trials, runs started
    together) make it once: the first makes it, the others wait and load it.  ``collective``:
    every process of a distributed run makes it together (stage 1 averages gradients over
    ranks), so rank 0 alone holds the lock and decides, for all ranks, whether it exists;
    otherwise each process takes the lock itself.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    locks = not collective or distributed.rank() == 0
    with FileLock(f"{path}.lock") if locks else nullcontext():
        exists = distributed.from_rank0(path.exists()) if collective else path.exists()
        return load(path) if exists else make(path)
