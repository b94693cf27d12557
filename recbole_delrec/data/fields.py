"""The names of RecBole's augmented sequence columns, whatever a data set calls its fields.

RecBole's ``SequentialDataset`` names each history column after its field
(``<ITEM_ID_FIELD><LIST_SUFFIX>``, the attribute ``<field>_list_field``), so a data set whose
item field is ``iid`` has ``iid_list``, not ``item_id_list``: code that reads histories asks
here, as RecBole's ``SequentialRecommender.ITEM_SEQ`` does, instead of assuming ``item_id``.
"""

from __future__ import annotations

from recbole.data.dataset import SequentialDataset


def item_seq_field(dataset: SequentialDataset) -> str:
    """The column holding each row's item history (RecBole's ``ITEM_SEQ``)."""
    return dataset.iid_field + dataset.config["LIST_SUFFIX"]
