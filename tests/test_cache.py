"""The one cache scheme: every input of an artefact is in its key, and nothing else is.

A test per input (templates, titles, dtype, LLM, training split, seed) proves that a
change makes a new key; the same inputs give the same key and a second run loads what the
first one made.  The declarations of what stage 1 and TSLRec's knowledge step read are
proved complete by running those steps on a Config that records every key they read.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_delrec.config import isolated_config
from recbole_delrec.data.candidates import check_candidates
from recbole_delrec.delrec.distill import artifact as stage1_artifact
from recbole_delrec.delrec.distill.artifact import prepare_soft_prompt, soft_prompt_meta, soft_prompt_path
from recbole_delrec.delrec.model import DELRec
from recbole_delrec.prompts.builder import template_dir
from recbole_delrec.runs.cache import file_safe, llm_identity, load_or_make, split_fingerprint
from recbole_delrec.runs.startup import build
from recbole_delrec.llm.sources import cached_revision, resolve
from recbole_delrec.delrec.distill import SoftPromptDistiller
from recbole_delrec.teacher import load_or_train_teacher, teacher_config, teacher_file, teacher_identity
from recbole_delrec.tslrec import trainer as tslrec_trainer
from tests.conftest import tiny_dict, tsl_dict

pytestmark = pytest.mark.usefixtures("one_thread")  # TSLRec's tiny runs, as in test_tslrec


class RecordingConfig(Config):
    """A RecBole ``Config`` (a copy of one) that remembers every key read from it."""

    def __init__(self, config: Config) -> None:  # noqa: D107 - a copy, not a new parse
        self.__dict__.update(copy.deepcopy(config).__dict__)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return super().__contains__(key)

    def __getattr__(self, item):
        if item in self.__dict__.get("final_config_dict", {}):
            self.__dict__["read"].add(item)
        return super().__getattr__(item)


def changed(config: Config, **values) -> Config:
    """A copy of ``config`` with ``values`` set (the original stays as it is)."""
    other = copy.deepcopy(config)
    for key, value in values.items():
        other[key] = value
    return other


def soft_prompt_key(config: Config, dataset) -> str:
    return soft_prompt_meta(config, dataset, "scratch-t5")["key"]


def split_of(saved_dir: Path, **overrides):
    """The training split of the ML-100K slice under other data settings."""
    config = isolated_config("DELRec", "ml-100k", tiny_dict(saved_dir, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    return config, data_preparation(config, create_dataset(config))[0]._dataset


# ---------------------------------------------------------------- names
def test_one_file_safe_name_for_every_llm_spelling(tmp_path):
    assert file_safe("google/flan-t5-xl") == "google--flan-t5-xl"
    assert file_safe("scratch-t5") == "scratch-t5"
    folder = tmp_path / "my flan-t5"
    folder.mkdir()
    assert file_safe(str(folder) + "/") == "my-flan-t5"  # a local folder: its name, made portable
    assert file_safe("a:b*c?") == "a-b-c-"


# ---------------------------------------------------------------- one test per input
def test_the_template_texts_are_in_the_key_not_the_folder_name(tiny_data, tmp_path):
    config, train, _, _ = tiny_data
    dataset = train._dataset
    mine = tmp_path / "templates"
    shutil.copytree(template_dir(), mine)
    same_texts = changed(config, prompt_template_dir=str(mine))
    assert soft_prompt_key(same_texts, dataset) == soft_prompt_key(config, dataset)
    rps = mine / "rps.txt"
    rps.write_text(rps.read_text(encoding="utf-8") + " Answer briefly.", encoding="utf-8")
    assert soft_prompt_key(same_texts, dataset) != soft_prompt_key(config, dataset)


@pytest.mark.parametrize("key, value", [
    ("title_field", "release_year"),
    ("title_year_field", None),
    ("seed", 8),
    ("teacher_model", "GRU4Rec"),
])
def test_a_changed_setting_makes_a_new_soft_prompt(tiny_data, key, value):
    config, train, _, _ = tiny_data
    assert config[key] != value
    assert soft_prompt_key(changed(config, **{key: value}), train._dataset) != soft_prompt_key(config, train._dataset)


def test_the_llm_is_known_by_its_files_not_only_its_name(tiny_data, tmp_path):
    config, train, _, _ = tiny_data
    folder = tmp_path / "flan"
    folder.mkdir()
    (folder / "config.json").write_text('{"d_model": 32}')
    local = changed(config, llm_path=str(folder))
    first = soft_prompt_key(local, train._dataset)
    assert first != soft_prompt_key(changed(config, llm_path="google/flan-t5-small"), train._dataset)
    assert soft_prompt_key(local, train._dataset) == first
    (folder / "config.json").write_text('{"d_model": 64}')  # another model saved into the same folder
    assert soft_prompt_key(local, train._dataset) != first
    assert llm_identity(changed(local, llm_dtype="float32")) != llm_identity(changed(local, llm_dtype="bfloat16"))
    assert llm_identity(changed(config, llm_dtype="float32")) == llm_identity(changed(config, llm_dtype="bfloat16"))


def test_a_hub_id_is_known_by_its_cached_revision_and_the_transformers_version(tmp_path):
    repo = tmp_path / "models--org--tiny"
    assert cached_revision("org/tiny", tmp_path) is None  # not downloaded yet: keyed by name
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    assert cached_revision("org/tiny", tmp_path) == "abc123"
    assert resolve("org/tiny").identity("bfloat16")["transformers"] == transformers.__version__


def test_the_training_split_is_in_every_key(tiny_data, saved_dir):
    config, train, _, _ = tiny_data
    other_config, other = split_of(saved_dir, user_inter_num_interval="[350,inf)")
    assert split_fingerprint(other) != split_fingerprint(train._dataset)
    assert soft_prompt_key(other_config, other) != soft_prompt_key(config, train._dataset)
    assert teacher_file(config, teacher_config(config), other) != teacher_file(config, teacher_config(config), train._dataset)
    tsl = changed(config, **TSL_KEYS)
    assert tslrec_trainer.knowledge_meta(tsl, other)["key"] != tslrec_trainer.knowledge_meta(tsl, train._dataset)["key"]


def _write_toy(folder: Path, first_title: str) -> None:
    rows = [(u, i, 10 * u + i) for u in range(1, 9) for i in range(1, 8)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user_id:token", "item_id:token", "timestamp:float"]).to_csv(
        folder / "toy.inter", sep="\t", index=False)
    titles = [first_title] + [f"Movie {i}" for i in range(2, 8)]
    pd.DataFrame({"item_id:token": range(1, 8), "title:token_seq": titles}).to_csv(
        folder / "toy.item", sep="\t", index=False)


def test_an_edited_item_file_changes_the_split_fingerprint(tmp_path):
    values = {"data_path": str(tmp_path), "use_gpu": False, "state": "ERROR", "MAX_ITEM_LIST_LENGTH": 5,
              "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]},
              "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
              "train_neg_sample_args": None, "loss_type": "CE", "checkpoint_dir": str(tmp_path / "saved")}
    prints = []
    for title in ("Toy Story", "Toy Story", "Toy Story 2"):
        _write_toy(tmp_path / "toy", title)
        config = isolated_config("SASRec", "toy", values)
        prints.append(split_fingerprint(data_preparation(config, create_dataset(config))[0]._dataset))
    assert prints[0] == prints[1] != prints[2]


# ---------------------------------------------------------------- reuse
def test_checkpoint_dir_holds_only_the_cached_teacher_after_training_one(tiny_data, tmp_path):
    """RecBole's own ``SASRec-<time>.pth`` of the teacher's training is not left beside the cache."""
    config, train, valid, _ = tiny_data
    here = changed(config, checkpoint_dir=str(tmp_path / "saved"))
    load_or_train_teacher(here, train, valid)
    cached = teacher_file(here, teacher_config(here), train._dataset)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [cached.name, cached.name + ".lock"]


def test_same_inputs_same_key_and_the_second_run_loads(tiny_data, tmp_path):
    config, train, valid, _ = tiny_data
    dataset = train._dataset
    again = isolated_config("DELRec", "ml-100k", tiny_dict(Path(config["checkpoint_dir"])))
    check_candidates(again)  # as the start-up does
    assert soft_prompt_key(again, dataset) == soft_prompt_key(config, dataset)

    first = load_or_train_teacher(config, train, valid)  # trained now, or by an earlier test
    cached = teacher_file(config, teacher_config(config), dataset)
    written = cached.stat().st_mtime_ns
    second = load_or_train_teacher(config, train, valid)
    assert cached.stat().st_mtime_ns == written  # loaded, not trained and written again
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])

    made = []

    def make(path: Path) -> str:
        made.append(path)
        torch.save({"x": 1}, path)
        return "made"

    path = tmp_path / "thing.pth"
    assert load_or_make(path, lambda p: "loaded", make) == "made"
    assert load_or_make(path, lambda p: "loaded", make) == "loaded" and made == [path]


def test_teacher_and_baseline_keys_differ_by_model(tiny_data):
    config, train, _, _ = tiny_data
    dataset = train._dataset
    teacher = teacher_file(config, teacher_config(config), dataset)
    baseline = teacher_file(config, teacher_config(config, "GRU4Rec", {"epochs": 1}), dataset)
    assert teacher.name.startswith("teacher-ml-100k-SASRec-") and baseline.name.startswith("teacher-ml-100k-GRU4Rec-")
    assert teacher.name.rsplit("-", 1)[1] != baseline.name.rsplit("-", 1)[1]
    same = teacher_file(config, teacher_config(config, "SASRec", config["teacher_config"]), dataset)
    assert same == teacher  # a baseline that is the teacher shares its artefact
    assert teacher_file(changed(config, seed=8), teacher_config(changed(config, seed=8)), dataset) != teacher


def test_the_teacher_identity_is_read_from_the_config_alone(tiny_data):
    """No second RecBole Config and no data: the teacher's settings, model and data set make
    it (the split is in every artefact's own key); where files go and progress bars do not."""
    config = tiny_data[0]
    identity = teacher_identity(config)
    assert identity["model"] == "SASRec" and identity["values"]["eval_args"]["mode"] == "full"
    assert teacher_identity(changed(config, checkpoint_dir="elsewhere", show_progress=True)) == identity
    assert teacher_identity(changed(config, teacher_config={**config["teacher_config"], "epochs": 2})) != identity
    assert teacher_identity(changed(config, MAX_ITEM_LIST_LENGTH=7)) != identity  # a data setting
    assert teacher_identity(changed(config, teacher_model="GRU4Rec"))["model"] == "GRU4Rec"


def test_soft_prompt_file_keeps_its_name_shape(tiny_data):
    config, train, _, _ = tiny_data
    meta = soft_prompt_meta(config, train._dataset, "google/flan-t5-xl")
    name = soft_prompt_path(config, meta).name
    assert name == f"soft-prompt-ml-100k-SASRec-google--flan-t5-xl-{meta['key']}.pth"


# ---------------------------------------------------------------- the declarations are complete
# A stage's key holds its declared settings and the teacher's identity, which holds every
# explicit value the teacher's config is built from.  So the stage's own code must read declared
# settings only, and what it reads to identify the teacher is in the key through that identity,
# or is one of the run settings the teacher declares as not shaping it (``teacher.NOT_SHAPING``).
def teacher_reads(config: Config, *also) -> set[str]:
    """Keys read to identify (or get) the teacher: the teacher's key holds or declares them."""
    view = RecordingConfig(config)
    teacher_identity(view)
    for step in also:
        step(view)
    return view.read


def assert_declared(undeclared: set[str]) -> None:
    assert not undeclared, f"the step reads {sorted(undeclared)}: declare each as shaping its artefact or not (why)"


@pytest.fixture
def stage1_view(tiny_data, tmp_path):
    """The tiny config, recording, with a small stage 1 whose artefacts go to ``tmp_path``."""
    view = RecordingConfig(tiny_data[0])
    for key, value in {"checkpoint_dir": str(tmp_path), "stage1_max_examples": 8, "stage1_epochs": 1,
                       "stage1_batch_size": 4, "stage1_holdout_users": 0.05}.items():
        view[key] = value
    view.read.clear()
    return view


def test_every_setting_stage1_reads_is_declared(tiny_data, stage1_view, tmp_path):
    config, train, valid, _ = tiny_data
    dataset = train._dataset
    frozen_teacher = load_or_train_teacher(config, train, valid)
    declared = set(stage1_artifact.SHAPING) | set(stage1_artifact.NOT_SHAPING)
    assert not set(stage1_artifact.SHAPING) & set(stage1_artifact.NOT_SHAPING)
    init_seed(config["seed"], config["reproducibility"])
    model = DELRec(stage1_view, dataset)  # titles, templates, LLM, prompts, soft prompt
    model.attach_teacher(frozen_teacher)
    SoftPromptDistiller(model, stage1_view).fit(dataset)
    assert {"title_field", "title_year_field", "llm_path", "prompt_template_dir"} <= stage1_view.read
    assert_declared(stage1_view.read - declared)

    whole = RecordingConfig(stage1_view)  # the artefact step around it: key, load or distil, save
    result = prepare_soft_prompt(model, whole, dataset, "all", writes=True)
    assert "fidelity_distilled" in result and list(tmp_path.glob("soft-prompt-ml-100k-SASRec-scratch-t5-*.pth"))
    assert_declared(whole.read - declared - teacher_reads(stage1_view))


TSL_KEYS = {"n_groups": 4, "kmeans_iterations": 20, "sft_epochs": 1, "sft_batch_size": 16, "sft_learning_rate": 0.001,
            "sft_history_length": 10, "augment_batch_size": 512, "knowledge_path": None,
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q", "v"]}}


def test_every_setting_the_knowledge_step_reads_is_declared(saved_dir):
    config = isolated_config("TSLRec", "ml-100k", tsl_dict(saved_dir, sft_epochs=1))
    started = build(config)
    train, valid = started.train_data, started.valid_data
    view = RecordingConfig(config)
    started.trainer.config = view
    started.trainer._prepare(train, valid)
    assert started.trainer.knowledge_info["reused"] is False  # made now: every read of the making is recorded
    declared = set(tslrec_trainer.SHAPING) | set(tslrec_trainer.NOT_SHAPING)
    assert not set(tslrec_trainer.SHAPING) & set(tslrec_trainer.NOT_SHAPING)

    def get_teacher(teacher_view: Config) -> None:
        load_or_train_teacher(teacher_view, train, valid)

    assert_declared(view.read - declared - teacher_reads(config, get_teacher))


def test_knowledge_key_holds_template_text_and_seed(tiny_data, tmp_path):
    config, train, _, _ = tiny_data
    dataset = train._dataset
    tsl = changed(config, **TSL_KEYS)
    key = tslrec_trainer.knowledge_meta(tsl, dataset)["key"]
    mine = tmp_path / "templates"
    shutil.copytree(template_dir(), mine)
    assert tslrec_trainer.knowledge_meta(changed(tsl, prompt_template_dir=str(mine)), dataset)["key"] == key
    (mine / "tslrec.txt").write_text("Items: {items}. Which of {n_groups} groups? Response:", encoding="utf-8")
    assert tslrec_trainer.knowledge_meta(changed(tsl, prompt_template_dir=str(mine)), dataset)["key"] != key
    # the scratch T5 is built in float32 whatever llm_dtype says: the same knowledge, the same key
    assert tslrec_trainer.knowledge_meta(changed(tsl, llm_dtype="bfloat16"), dataset)["key"] == key
    assert tslrec_trainer.knowledge_meta(changed(tsl, seed=8), dataset)["key"] != key
