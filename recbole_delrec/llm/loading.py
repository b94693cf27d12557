"""From ``llm_path`` to a :class:`~recbole_delrec.llm.backbone.Backbone` of the right family.

``llm_path`` is resolved by :mod:`~recbole_delrec.llm.sources`; the family that runs the
checkpoint is read from its config (:data:`FAMILIES`, tried in order: a third family is one
more file beside :mod:`~recbole_delrec.llm.t5` and :mod:`~recbole_delrec.llm.causal`, listed
here).  A GGUF file is dequantized once and cached as a ``save_pretrained`` folder under
``checkpoint_dir``, keyed by the file's content (the one cache scheme of
:mod:`recbole_delrec.runs.cache`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from logging import getLogger
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from recbole_delrec.llm.backbone import Backbone
from recbole_delrec.llm.causal import ARCHITECTURES, CausalBackbone
from recbole_delrec.llm.precision import llm_dtype, warn_if_emulated
from recbole_delrec.llm.sources import LLMSource, check_hub_id, gguf_config, resolve
from recbole_delrec.llm.t5 import Seq2SeqBackbone
from recbole_delrec.runs.allocator import bound_heap
from recbole_delrec.runs.artifacts import atomic_dir, fingerprint
from recbole_delrec.runs.cache import artifact_path, load_or_make

FAMILIES: tuple[type[Backbone], ...] = (Seq2SeqBackbone, CausalBackbone)


def load_backbone(settings: Mapping[str, Any], corpus: Iterable[str]) -> Backbone:
    """The LLM of ``llm_path`` (``llm_gguf_file``, ``llm_dtype``, on ``device``), or the scratch T5.

    ``settings``: a RecBole config (or a dict with those keys, ``scratch_llm`` and
    ``checkpoint_dir``); ``corpus``: the texts a scratch tokenizer is trained on.  Its passes keep
    the CPU heap under ``malloc_reuse_max_share`` (:func:`~recbole_delrec.runs.allocator.bound_heap`).
    """
    backbone = _load(settings, corpus)
    backbone.pass_start.register_forward_pre_hook(bound_heap)
    return backbone


def _load(settings: Mapping[str, Any], corpus: Iterable[str]) -> Backbone:
    source = resolve(settings["llm_path"], settings["llm_gguf_file"])
    if source.kind == "scratch":
        return Seq2SeqBackbone.scratch(settings["scratch_llm"], corpus)
    location = source.location
    if source.kind == "gguf":
        location = str(dequantized_folder(source, settings["checkpoint_dir"]))
    dtype = llm_dtype(settings["llm_dtype"], settings["device"])
    warn_if_emulated(dtype, settings["device"])
    return _pretrained(source, location, dtype)


def check_llm_path(llm_path: str | None, gguf_file: str | None = None,
                   checkpoint_dir: str | Path | None = None) -> LLMSource:
    """Fail before any data is read if ``llm_path`` cannot be loaded later.

    A local folder or GGUF file must hold a model of a family the plugin runs (its config is
    read, not its weights); a GGUF file's architecture one transformers can dequantize (read
    from its dequantized folder where ``checkpoint_dir`` holds one). A hub
    id must be well formed and, with downloads switched off (``HF_HUB_OFFLINE``/
    ``TRANSFORMERS_OFFLINE``), already in the local cache; an uncached id is named in a
    warning, since whether the network answers is known only when the model is built.
    """
    source = resolve(llm_path, gguf_file)
    if source.kind == "gguf":
        family_of(_gguf_model_config(source, checkpoint_dir))
    elif source.kind == "folder":
        family_of(AutoConfig.from_pretrained(source.location))
    elif source.kind == "hub":
        check_hub_id(source.location)
    return source


def family_of(config: PretrainedConfig) -> type[Backbone]:
    """The family that runs a checkpoint with this config."""
    for family in FAMILIES:
        if family.handles(config):
            return family
    raise ValueError(
        f"The LLM's config is a '{config.model_type}' model, which is neither an encoder-decoder of the T5 family "
        f"nor a decoder-only LLM the packed scorer is exact for ({', '.join(ARCHITECTURES)}): give a Flan-T5 or "
        f"one of those (Llama, Qwen2, Gemma, SmolLM, ...) as llm_path."
    )


def _pretrained(source: LLMSource, location: str, dtype: torch.dtype) -> Backbone:
    try:
        family = family_of(AutoConfig.from_pretrained(location))
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = family.auto_class.from_pretrained(location, dtype=dtype)
    except OSError as err:
        raise OSError(
            f"Could not load llm_path '{source.location}' ({err}). Without network access, download "
            f"the model elsewhere (e.g. `huggingface-cli download {source.location}`) and set llm_path "
            f"to that local directory."
        ) from err
    getLogger().info(f"LLM: loaded '{source.name}' ({family.family}, {model.num_parameters() / 1e6:.1f} M "
                     f"parameters, {dtype})")
    return family(model, tokenizer, source)


def dequantized_folder(source: LLMSource, checkpoint_dir: str | Path) -> Path:
    """The GGUF file dequantized once into a ``save_pretrained`` folder, keyed by its content."""
    return load_or_make(_dequantized_path(source, checkpoint_dir), lambda path: path,
                        lambda path: _dequantize(source.location, path))


def _dequantized_path(source: LLMSource, checkpoint_dir: str | Path) -> Path:
    # transformers' dequantizer is part of what the folder holds: its major version is in the key
    key = fingerprint({**source.identity("float32"), "transformers": transformers.__version__.split(".")[0]})
    return artifact_path(checkpoint_dir, "llm", (source.name,), key).with_suffix("")


def _gguf_model_config(source: LLMSource, checkpoint_dir: str | Path | None) -> PretrainedConfig:
    """A GGUF file's model config: from its dequantized folder where an earlier run left one
    (written whole or not at all), in milliseconds; else from the file's header, which
    transformers parses field by field, the whole vocabulary included (~4 s for SmolLM2)."""
    if checkpoint_dir is not None:
        folder = _dequantized_path(source, checkpoint_dir)
        if (folder / "config.json").is_file():
            return AutoConfig.from_pretrained(folder)
    return gguf_config(source.location)


def _dequantize(file: str, folder: Path) -> Path:
    """Dequantize a GGUF file with transformers and save it as a plain float32 checkpoint."""
    start, path = time.time(), Path(file)
    family = family_of(gguf_config(file))
    try:  # the tokenizer first: it fails in seconds where the weights take minutes
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, OSError, NotImplementedError) as err:
        raise ValueError(f"transformers cannot rebuild the tokenizer of the GGUF file '{file}' ({err}): use a "
                         f"`save_pretrained` folder of the same model as llm_path instead.") from err
    model = family.auto_class.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # The weights are dequantized already; the GGUF quantizer only forbids saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_dir(folder, write)
    getLogger().info(f"LLM: dequantized '{file}' into '{folder}' in {time.time() - start:.1f} s (reused from now on)")
    return folder
