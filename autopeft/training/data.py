"""Tokenise a task once, cache it on disk, and batch it with dynamic padding grouped by length."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from autopeft.locks import StoreLock
from autopeft.tasks import TaskSpec


def _cache_key(model: str, task: TaskSpec, split: str, max_length: int, data_dir: str | None) -> str:
    raw = json.dumps([str(model), task.fingerprint(data_dir), split, max_length, str(data_dir)])
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def tokenized_split(
    task: TaskSpec,
    split: str,
    model: str,
    max_length: int,
    data_dir: str | None,
    cache_dir: str | Path | None,
) -> dict[str, list | np.ndarray]:
    """Token ids (unpadded, truncated) and labels of a split, read from the disk cache when present.

    Args:
        task: the task.
        split: ``train``, ``validation`` or ``selection`` (a task's own selection file).
        model: model id/folder whose tokenizer is used.
        max_length: truncation length.
        data_dir: local GLUE folder, or ``None`` for the hub.
        cache_dir: folder for cached tokenisations (``None`` disables the cache).
    """
    if cache_dir is None:
        return _tokenize(task, split, model, max_length, data_dir, None)
    key = _cache_key(model, task, split, max_length, data_dir)
    path = Path(cache_dir) / f"{task.name}-{split}-{key}.json"
    if not path.is_file():
        with StoreLock(path):  # processes starting together tokenise once; the others read the file
            if not path.is_file():
                return _tokenize(task, split, model, max_length, data_dir, path)
    cached = json.loads(path.read_text())  # plain JSON, never pickle: a cache file cannot run code
    cached["labels"] = np.asarray(cached["labels"], dtype=np.float32 if task.is_regression else np.int64)
    return cached


def _tokenize(
    task: TaskSpec, split: str, model: str, max_length: int, data_dir: str | None, path: Path | None
) -> dict[str, list | np.ndarray]:
    """Tokenise a split, and write it to ``path`` (atomically) when one is given."""
    from autopeft.models import load_tokenizer

    data = task.load_split(split, data_dir)
    tokenizer = load_tokenizer(model)
    encoded = tokenizer(*data.texts, truncation=True, max_length=max_length)
    result = {
        "input_ids": encoded["input_ids"],
        "token_type_ids": encoded.get("token_type_ids"),
        "labels": data.labels,
        "pad_token_id": tokenizer.pad_token_id or 0,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**result, "labels": data.labels.tolist()}))
        tmp.replace(path)  # atomic: concurrent trials never read a half-written file
    return result


SCORED_SPLITS = ("selection", "validation")
"""What a training is scored on: the search's selection split, or the task's validation split."""


def training_and_evaluation(
    task: TaskSpec,
    scored_on: str,
    model: str,
    max_length: int,
    data_dir: str | None,
    cache_dir: str | Path | None,
    selection_seed: int = 0,
) -> tuple[dict, dict]:
    """The tokenised examples a training learns from, and those it is scored on.

    ``validation``: the whole train split, and the validation split. ``selection`` (a search): the
    task's own selection file and the whole train split when it names one, else the train split
    without a stratified, seeded held-out part (:func:`autopeft.tasks.holdout_indices`), and that
    part. The validation split is not read for a search.

    Args:
        task: the task.
        scored_on: ``selection`` or ``validation``.
        model: model id/folder whose tokenizer is used.
        max_length: truncation length.
        data_dir: local GLUE folder, or ``None`` for the hub.
        cache_dir: tokenisation cache folder.
        selection_seed: the seed of the held-out part (the study's seed).
    """
    from autopeft.tasks import holdout_indices

    if scored_on not in SCORED_SPLITS:
        raise ValueError(f"scored_on must be one of {SCORED_SPLITS}, got {scored_on!r}")
    train = tokenized_split(task, "train", model, max_length, data_dir, cache_dir)
    if scored_on == "validation" or task.selection is not None:
        return train, tokenized_split(task, scored_on, model, max_length, data_dir, cache_dir)
    held_out = holdout_indices(train["labels"], task.is_regression, selection_seed)
    rest = np.setdiff1d(np.arange(len(train["labels"])), held_out)
    return subset(train, rest), subset(train, held_out)


def scored_part(split: dict, max_eval_samples: int | None) -> dict:
    """The examples of an evaluation split that a trial scores: its first ``max_eval_samples`` (all when unset).

    Args:
        split: the tokenised evaluation split.
        max_eval_samples: the proxy's ``max_eval_samples``.
    """
    if max_eval_samples and max_eval_samples < len(split["labels"]):
        return subset(split, np.arange(max_eval_samples))
    return split


def subset(split: dict, indices: np.ndarray) -> dict:
    """The examples of a tokenised split at ``indices``."""
    types = split["token_type_ids"]
    return {
        "input_ids": [split["input_ids"][i] for i in indices],
        "token_type_ids": None if types is None else [types[i] for i in indices],
        "labels": np.asarray(split["labels"])[indices],
        "pad_token_id": split["pad_token_id"],
    }


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar-length examples (little padding); shuffled when ``rng`` is given.

    Examples are shuffled, cut into chunks of 50 batches, sorted by length within each chunk, and the
    batches are shuffled again, so training stays stochastic while padding stays small.

    Args:
        lengths: token count of each example.
        batch_size: examples per batch.
        rng: random generator for training; ``None`` sorts everything by length (evaluation).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def collate(split: dict, indices: np.ndarray, regression: bool) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest example.

    Args:
        split: a tokenised split.
        indices: the examples of the batch.
        regression: float labels when true, class ids otherwise.
    """
    ids = [split["input_ids"][i] for i in indices]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), split["pad_token_id"], dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.as_tensor(seq)
        mask[row, : len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if split["token_type_ids"] is not None:
        types = torch.zeros((len(ids), width), dtype=torch.long)
        for row, i in enumerate(indices):
            seq = split["token_type_ids"][i]
            types[row, : len(seq)] = torch.as_tensor(seq)
        batch["token_type_ids"] = types
    labels = np.asarray(split["labels"])[indices]
    batch["labels"] = torch.as_tensor(labels, dtype=torch.float32 if regression else torch.long)
    return batch
