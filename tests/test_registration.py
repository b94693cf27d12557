"""RecBole itself knows DELRec, its trainer and its YAML: ``get_model`` from the import alone,
everything after ``recbole_delrec.register()`` (or RecBole's first lookup of a plugin model);
importing the plugin changes nothing else in RecBole."""

import subprocess
import sys

import torch
from recbole.model.sequential_recommender import GRU4Rec
from recbole.trainer import Trainer
from recbole.utils import ModelType, get_model, get_trainer, init_seed

from recbole.data import create_dataset, data_preparation

from recbole_delrec import DELRec, DELRecTrainer, register
from recbole_delrec.config import isolated_config
from tests.conftest import tiny_dict
from tests.generated import LOAD_COL, histories, titles, write_atomic


def test_recbole_lookups_find_the_plugin():
    assert get_model("DELRec") is DELRec
    assert get_trainer(ModelType.SEQUENTIAL, "DELRec") is DELRecTrainer


def test_plugin_yaml_is_merged_and_user_values_win(tmp_path):
    config = isolated_config("DELRec", "ml-100k", {"n_soft_tokens": 7, "checkpoint_dir": str(tmp_path)})
    assert config["title_field"] == "movie_title"  # properties/dataset/ml-100k.yaml
    assert config["eval_args"]["mode"] == {"valid": "uni19", "test": "uni19"}  # DELRec.yaml
    assert config["teacher_model"] == "SASRec"
    assert config["n_soft_tokens"] == 7  # config_dict beats the plugin's YAML
    plain = isolated_config("SASRec", "ml-100k", {"checkpoint_dir": str(tmp_path), "train_neg_sample_args": None})
    assert "teacher_model" not in plain  # other RecBole models are untouched


def test_anomaly_detection_is_off_after_register():
    """compat's ``anomaly_detection_off``: RecBole's SINE import switches it on."""
    assert not torch.is_anomaly_enabled()


IMPORT_ONLY = """
import torch
import recbole.trainer, recbole.utils
from recbole.config import Config
from recbole.trainer import Trainer
from recbole.utils import ModelType
import recbole.data.dataset.dataset as reader
saved, init_device, pandas = Trainer._save_checkpoint, Config._init_device, reader.pd
import recbole_delrec, recbole_delrec.llm.scoring, recbole_delrec.delrec.model, recbole_delrec.tslrec.model
recbole.utils.get_model("SASRec")  # RecBole used without the plugin's models
assert Trainer._save_checkpoint is saved and Config._init_device is init_device and reader.pd is pandas, "importing the plugin mended RecBole"
assert not hasattr(recbole.trainer, "DELRecTrainer"), "importing the plugin registered its trainer"
assert recbole.utils.get_model.__module__ == "recbole.utils.utils"
assert recbole.utils.get_model("DELRec") is recbole_delrec.DELRec  # no register() call
assert recbole.utils.get_model("TSLRec") is recbole_delrec.TSLRec
assert recbole.utils.get_trainer(ModelType.SEQUENTIAL, "DELRec") is recbole_delrec.DELRecTrainer
assert Trainer._save_checkpoint is not saved and not torch.is_anomaly_enabled()  # mended once a plugin model is used
config = Config(model="DELRec", dataset="ml-100k", config_dict={"checkpoint_dir": "unused"})
assert config["title_field"] == "movie_title" and config["teacher_model"] == "SASRec"  # the plugin's YAML
print("ok")
"""


def test_importing_the_plugin_makes_its_models_known_and_mends_only_when_they_are_used():
    """``import recbole_delrec`` alone: RecBole's ``get_model`` (hence ``Config``,
    ``run_recbole``) finds DELRec and TSLRec, while RecBole used for its own models is left
    as it is; the mends and the other lookups come with the first use of a plugin model."""
    out = subprocess.run([sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_recbole_checkpoints_load_safely(tiny_data, tmp_path):
    """RecBole's own Trainer.evaluate(load_best_model=True) works on torch >= 2.6."""
    config, train, valid, _ = tiny_data
    gru = isolated_config("GRU4Rec", "ml-100k", tiny_dict(tmp_path, epochs=1, train_batch_size=2048, loss_type="CE", train_neg_sample_args=None,
                                                             eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}))
    init_seed(gru["seed"], True)
    model = GRU4Rec(gru, train._dataset)
    trainer = Trainer(gru, model)
    trainer._save_checkpoint(0, verbose=False)
    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
    assert checkpoint["config"]["model"] == "GRU4Rec"
    model.load_state_dict(checkpoint["state_dict"])


def test_item_distribution_metrics_evaluate(tmp_path):
    """compat's ``collector_counts``: RecBole's own Trainer evaluates ItemCoverage and GiniIndex,
    which need the catalogue's size (an int its collector called ``.cpu()`` on: RecBole #2131)."""
    values = tiny_dict(tmp_path, epochs=1, train_batch_size=2048, loss_type="CE", train_neg_sample_args=None,
                       eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
                       metrics=["ItemCoverage", "GiniIndex", "Hit"], topk=[5], valid_metric="Hit@5")
    config = isolated_config("GRU4Rec", "ml-100k", values)
    init_seed(config["seed"], True)
    train, valid, _ = data_preparation(config, create_dataset(config))
    trainer = Trainer(config, GRU4Rec(config, train._dataset))
    trainer.eval_collector.data_collect(train)
    result = trainer.evaluate(valid, load_best_model=False)
    assert 0 < result["itemcoverage@5"] <= 1 and 0 < result["giniindex@5"] <= 1, result


def titles_read(dataset) -> dict[str, str]:
    """``{item token: title}`` as RecBole loaded them (the padding item left out)."""
    return {dataset.id2token("item_id", i): " ".join(dataset.id2token("title", [t for t in row.tolist() if t]))
            for i, row in enumerate(dataset.item_feat["title"]) if i}


def test_titles_with_double_quotes_load_as_written(tmp_path):
    """compat's ``literal_quotes``: without it RecBole stops at the first title and, with
    the unmatched quote of ``i3``, would join rows ``i3`` to ``i5`` into one title; a field
    quoted as ``csv.writer`` writes it (the converters' files) still reads as before."""
    names = titles(8, (2, 3))
    names.update(i1='"Weird Al" Yankovic Live', i2='12" Vinyl Record', i3='"Unclosed quote', i5='Ends "here"')
    write_atomic(tmp_path, "quotes", histories(6, 5, 8), {**names, "i6": '"The ""Best"" of"'})
    register()
    config = isolated_config("DELRec", "quotes", tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL,
                                                         user_inter_num_interval="[1,inf)"))
    dataset = create_dataset(config)
    assert titles_read(dataset) == {**names, "i6": 'The "Best" of'}


def test_a_comma_separated_data_set_keeps_csv_quoting(tmp_path):
    """With ``field_separator: ","`` only CSV quoting can hold a comma inside a title, so
    ``literal_quotes`` leaves such files to pandas' quoting (taking quotes as text there split
    "Hello, World" in two and shifted the row's columns)."""
    names = {**titles(8, (2, 3)), "i1": "Hello, World", "i2": 'A "quoted", word'}
    write_atomic(tmp_path, "commas", histories(6, 5, 8), None)
    folder = tmp_path / "commas"
    (folder / "commas.inter").write_text((folder / "commas.inter").read_text().replace("\t", ","))
    quoted = {item: '"' + title.replace('"', '""') + '"' if "," in title else title for item, title in names.items()}
    (folder / "commas.item").write_text("item_id:token,title:token_seq\n"
                                        + "".join(f"{item},{title}\n" for item, title in quoted.items()))
    register()
    config = isolated_config("DELRec", "commas", tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL,
                                                         field_separator=",", user_inter_num_interval="[1,inf)"))
    dataset = create_dataset(config)
    assert titles_read(dataset) == names
