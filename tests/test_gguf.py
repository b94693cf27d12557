"""A GGUF file as ``llm_path``: dequantized once by transformers, cached, and checked early.

Everything runs on a real GGUF file written here (:func:`tests.tiny_llms.write_tiny_gguf`: a
random two-layer Llama with a byte-level BPE tokenizer, laid out as llama.cpp lays out a Llama),
so the real header reading, dequantization, ``save_pretrained`` cache and reload are tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recbole_delrec.llm.loading import check_llm_path, load_backbone
from tests.tiny_llms import write_tiny_gguf


SAMPLE = "<|im_start|>user\nStar Wars (1977), then Fargo  (1996)! Zebra ÅØ 東京<|im_end|>"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """``(file, hf_model, hf_tokenizer)``: one GGUF file for the module (writing it trains a tokenizer)."""
    file = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    model, tokenizer = write_tiny_gguf(file)
    return file, model, tokenizer


def settings(checkpoint_dir: Path, llm_path, gguf_file=None) -> dict:
    """The keys ``load_backbone`` reads, for a float32 model on the CPU (exact comparisons)."""
    return {"llm_path": str(llm_path), "llm_gguf_file": gguf_file, "llm_dtype": "float32", "device": "cpu",
            "scratch_llm": None, "checkpoint_dir": str(checkpoint_dir)}


def cached_folders(checkpoint_dir: Path) -> list[Path]:
    """The dequantized ``llm-*`` folders (the lock file beside each is not one)."""
    return sorted(p for p in checkpoint_dir.glob("llm-*") if p.is_dir())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file of a folder as (size, mtime): a rewritten folder changes it."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_gguf_loads_the_model_it_was_written_from(tiny_gguf, tmp_path):
    """Dequantized weights (q/k un-permuted by transformers) give the original's logits, and the
    tokenizer rebuilt from the file's metadata encodes as the original does."""
    file, hf_model, hf_tokenizer = tiny_gguf
    backbone = load_backbone(settings(tmp_path, file), corpus=[])

    assert type(backbone.model).__name__ == "LlamaForCausalLM"
    assert backbone.source.kind == "gguf" and Path(backbone.source.location) == file
    assert backbone.model.dtype == torch.float32
    ids = torch.tensor([[1, 5, 17, 200, 3, 99, 250, 2], [7, 42, 42, 8, 120, 260, 11, 0]])
    with torch.no_grad():
        expected, got = hf_model(ids).logits, backbone.model.eval()(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    assert backbone.encode(SAMPLE) == hf_tokenizer(SAMPLE, add_special_tokens=False)["input_ids"]
    assert backbone.tokenizer.decode(backbone.encode(SAMPLE)) == SAMPLE
    assert backbone.tokenizer.eos_token == "<|im_end|>" and backbone.end_id == hf_tokenizer.eos_token_id


def test_dequantized_folder_is_cached_and_reused(tiny_gguf, tmp_path):
    """The first load writes one ``llm-<name>-<key>`` save_pretrained folder under checkpoint_dir;
    later loads, by file path or by folder plus ``llm_gguf_file``, reuse it without rewriting it."""
    file, hf_model, _ = tiny_gguf
    load_backbone(settings(tmp_path, file), corpus=[])
    [folder] = cached_folders(tmp_path)
    assert folder.name.startswith("llm-tiny-llama-")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    before = snapshot(folder)

    again = load_backbone(settings(tmp_path, file), corpus=[])
    by_folder = load_backbone(settings(tmp_path, file.parent, gguf_file=file.name), corpus=[])

    assert cached_folders(tmp_path) == [folder] and snapshot(folder) == before
    for backbone in (again, by_folder):
        assert backbone.model.name_or_path == str(folder)
        torch.testing.assert_close(backbone.model.lm_head.weight, hf_model.lm_head.weight)
    assert by_folder.source.kind == "gguf" and Path(by_folder.source.location) == file


def test_the_early_check_reads_a_cached_folder_instead_of_the_gguf_header(tiny_gguf, tmp_path):
    """With ``checkpoint_dir`` holding the file's dequantized folder, ``check_llm_path`` reads that
    folder's config (milliseconds) instead of parsing the GGUF header (seconds for a real vocabulary):
    a folder edited to another architecture is what it judges, while the file alone still passes."""
    file, _, _ = tiny_gguf
    load_backbone(settings(tmp_path, file), corpus=[])
    [folder] = cached_folders(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert", "architectures": ["BertModel"]}))

    check_llm_path(str(file))  # the header: a Llama
    check_llm_path(str(file), checkpoint_dir=tmp_path / "empty")  # no folder there: the header
    with pytest.raises(ValueError, match="'bert' model"):
        check_llm_path(str(file), checkpoint_dir=tmp_path)


def test_unloadable_gguf_is_named_before_anything_runs(tmp_path):
    """A GGUF of an architecture transformers cannot dequantize fails in ``check_llm_path`` with
    the file's name (and ``load_backbone`` caches nothing); a missing file is named too."""
    import gguf

    file = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(file), "notamodel")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with pytest.raises(ValueError, match="odd.gguf"):
        check_llm_path(str(file))
    with pytest.raises(ValueError, match="odd.gguf"):
        check_llm_path(str(tmp_path), "odd.gguf")
    with pytest.raises(ValueError, match="odd.gguf"):
        load_backbone(settings(tmp_path / "saved", file), corpus=[])
    assert cached_folders(tmp_path / "saved") == []

    missing = tmp_path / "missing.gguf"
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        check_llm_path(str(missing))
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        check_llm_path(str(tmp_path), "missing.gguf")
