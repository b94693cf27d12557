"""Pre-grouping: latent item categories from a trained ID-based model, and user targets.

TSLRec needs no item text.  An item's *latent category* is the k-means cluster of its
embedding in a trained ID-based sequential model (the teacher): items that the teacher
places close together are bought in similar contexts.  A training user's *preference
distribution* is the share of their training interactions that falls in each group; it is
what the LLM learns to reconstruct from the user's item sequence.

Item id 0 is RecBole's padding item: it belongs to no group (its label is ``-1``) and is
never counted.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataset import Dataset
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_delrec.data.fields import item_seq_field

NO_GROUP = -1


def item_table(model: SequentialRecommender, n_items: int) -> torch.Tensor:
    """The ``(n_items, d)`` item embedding table of a trained RecBole sequential model.

    RecBole's sequential models keep it in ``item_embedding`` (BERT4Rec adds a mask row at
    the end, which is dropped here).
    """
    embedding = getattr(model, "item_embedding", None)
    weight = getattr(embedding, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape[0] < n_items:
        raise ValueError(
            f"teacher_model '{type(model).__name__}' has no `item_embedding` table of "
            f"{n_items} items to group: use a model such as SASRec, GRU4Rec, Caser, NARM, STAMP."
        )
    return weight[:n_items].detach().float().cpu().clone()


def kmeans(points: torch.Tensor, k: int, seed: int, iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded k-means (k-means++ start, Lloyd steps): ``(labels (n,), centroids (k, d))``.

    Deterministic for a given ``seed``; a cluster that runs empty is restarted at the point
    farthest from its centroid, so exactly ``k`` non-empty groups come back when ``n >= k``.
    """
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"n_groups={k} must be between 1 and the number of items ({n}).")
    x = points.double()
    gen = torch.Generator().manual_seed(int(seed))
    centroids = x[torch.randint(n, (1,), generator=gen)]
    dist = torch.cdist(x, centroids).squeeze(1) ** 2
    for _ in range(1, k):  # k-means++: next centre with probability proportional to d^2
        probs = dist / dist.sum() if dist.sum() > 0 else torch.full_like(dist, 1.0 / n)
        pick = torch.multinomial(probs, 1, generator=gen)
        centroids = torch.cat([centroids, x[pick]])
        dist = torch.minimum(dist, (torch.cdist(x, x[pick]).squeeze(1)) ** 2)
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iterations):
        d2 = torch.cdist(x, centroids) ** 2
        new = d2.argmin(1)
        counts = torch.bincount(new, minlength=k)
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = int(d2.gather(1, new[:, None]).squeeze(1).argmax())
            new[far] = empty
            counts = torch.bincount(new, minlength=k)
        if torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        centroids = sums / counts[:, None].clamp(min=1)
    return labels, centroids.float()


def item_groups(table: torch.Tensor, n_groups: int, seed: int, iterations: int = 100) -> torch.Tensor:
    """Each item id's group (``-1`` for the padding item 0) from its embedding ``table``."""
    labels, _ = kmeans(table[1:], n_groups, seed, iterations)
    return torch.cat([torch.tensor([NO_GROUP]), labels])


def user_sequences(dataset: Dataset) -> dict[int, list[int]]:
    """Every training user's full training sequence, oldest first.

    RecBole's training split holds one row per training target with its (truncated)
    prefix: a user's sequence is the first row's first prefix item followed by every
    training target in time order (so ``MAX_ITEM_LIST_LENGTH`` truncates nothing here).
    """
    feat = dataset.inter_feat
    users = feat[dataset.uid_field].numpy()
    targets = feat[dataset.iid_field].numpy()
    lists = feat[item_seq_field(dataset)].numpy()
    times = feat[dataset.time_field].numpy() if dataset.time_field in feat else np.zeros(len(feat))
    order = np.lexsort((np.arange(len(feat)), times, users))
    sequences: dict[int, list[int]] = {}
    for row in order:
        user = int(users[row])
        if user not in sequences:
            sequences[user] = [int(lists[row][0])] if lists[row][0] > 0 else []
        sequences[user].append(int(targets[row]))
    return sequences


def preference_targets(sequences: dict[int, list[int]], groups: torch.Tensor, n_groups: int) -> dict[int, torch.Tensor]:
    """Per user, the share of their interactions in each group (each row sums to 1)."""
    targets = {}
    for user, items in sequences.items():
        labels = groups[torch.as_tensor(items, dtype=torch.long)]
        labels = labels[labels >= 0]
        counts = torch.bincount(labels, minlength=n_groups).float()
        if counts.sum() == 0:
            continue
        targets[user] = counts / counts.sum()
    return targets
