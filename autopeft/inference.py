"""Predictions of a trained folder (:mod:`autopeft.model_folder`) on new texts: what ``autopeft predict`` and the
MLflow model serve.

Texts are tokenised as the model was trained (its tokenizer, its ``max_length``), batched by length, and scored
without gradients. A classification answers each row's label name and every class's probability (``p_<label>``);
a regression answers its ``score``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autopeft import defaults
from autopeft.errors import ConfigError, DataError
from autopeft.methods.config import EXPORT_FILE


class Predictor:
    """A trained folder, loaded once, that answers batches of rows.

    Args:
        folder: a trained folder (``retrain``'s, ``export --trained``'s, ``evaluate --out``'s).
        batch_size: rows per forward pass.
        trust_remote_code: allow the backbone's own code.

    Raises:
        ConfigError: the folder holds no trained weights (a configuration alone predicts nothing).
    """

    def __init__(self, folder: str | Path, batch_size: int = 64, trust_remote_code: bool = False) -> None:
        from autopeft.model_folder import WEIGHTS_FILE, load
        from autopeft.models import load_tokenizer, resolve_backbone

        folder = Path(folder)
        if not (folder / EXPORT_FILE).is_file():
            raise ConfigError(f"{folder}: not a model folder (no {EXPORT_FILE})")
        if not (folder / WEIGHTS_FILE).is_file():
            raise ConfigError(
                f"{folder}: no trained weights ({WEIGHTS_FILE}); export with --trained, or use retrain's folder"
            )
        self.document = json.loads((folder / EXPORT_FILE).read_text())
        trained = self.document.get("trained") or {}
        self.text_fields: list[str] = list(self.document.get("text_fields") or [])
        self.label_names: list[str] = list(self.document.get("label_names") or [])
        self.max_length = int((trained.get("settings") or {}).get("max_length", defaults.MAX_LENGTH))
        self.batch_size = batch_size
        self.model = load(folder, trust_remote_code=trust_remote_code).model.eval()
        backbone = resolve_backbone(self.document.get("model_path") or self.document["model"], self.document["model"])
        self.tokenizer = load_tokenizer(backbone, trust_remote_code)

    @property
    def regression(self) -> bool:
        """Whether the model answers a score rather than a label."""
        return not self.label_names

    @property
    def output_columns(self) -> list[str]:
        """The columns :meth:`predict` answers."""
        return ["score"] if self.regression else ["label", *(f"p_{name}" for name in self.label_names)]

    def logits(self, texts: tuple[list[str], ...]) -> np.ndarray:
        """The model's outputs for one or two lists of texts (one row per text, in order).

        Args:
            texts: the text columns, as the task's ``text_fields`` order them.
        """
        from autopeft.training.data import collate, length_grouped_batches

        encoded = self.tokenizer(*texts, truncation=True, max_length=self.max_length)
        split = {
            "input_ids": encoded["input_ids"],
            "token_type_ids": encoded.get("token_type_ids"),
            "labels": np.zeros(len(texts[0])),
            "pad_token_id": self.tokenizer.pad_token_id or 0,
        }
        lengths = np.asarray([len(ids) for ids in split["input_ids"]])
        device = next(self.model.parameters()).device
        out = np.empty((len(lengths), 1 if self.regression else len(self.label_names)), dtype=np.float32)
        with torch.inference_mode():
            for indices in length_grouped_batches(lengths, self.batch_size, None):
                batch = collate(split, indices, self.regression)
                batch.pop("labels")
                out[indices] = self.model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Answer each row of ``frame`` (it holds the task's text columns; other columns are ignored).

        Args:
            frame: the rows.

        Raises:
            DataError: a text column is missing, or a text is empty.
        """
        missing = [c for c in self.text_fields if c not in frame.columns]
        if missing:
            raise DataError(
                f"the input has no column {missing[0]!r}: the model reads {', '.join(self.text_fields)} "
                f"(found: {', '.join(map(str, frame.columns))})"
            )
        texts = []
        for column in self.text_fields:
            values = frame[column]
            if values.isna().any():
                raise DataError(f"column {column!r} is empty at row {int(np.flatnonzero(values.isna())[0]) + 1}")
            texts.append(values.astype(str).tolist())
        if not len(frame):
            return pd.DataFrame(columns=self.output_columns)
        logits = self.logits(tuple(texts))
        if self.regression:
            return pd.DataFrame({"score": logits[:, 0]})
        probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        answer = pd.DataFrame({"label": [self.label_names[k] for k in probabilities.argmax(-1)]})
        for k, name in enumerate(self.label_names):
            answer[f"p_{name}"] = probabilities[:, k]
        return answer


INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
"""The files ``predict`` reads, by suffix."""

ID_COLUMNS = ("id", "idx", "index", "guid")
"""An input's id column, the first of these it has (else the row number, from 0)."""


def read_batches(path: str | Path, rows: int) -> Iterator[pd.DataFrame]:
    """The rows of a CSV, TSV, JSON Lines or Parquet file, ``rows`` at a time (a large file is never read whole).

    Args:
        path: the file.
        rows: rows per batch.

    Raises:
        DataError: the file is missing, of another format, or unreadable.
    """
    path = Path(path)
    kind = INPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown input format; expected one of {', '.join(INPUT_FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
                yield batch.to_pandas()
            return
        if kind == "jsonl":
            yield from pd.read_json(path, lines=True, chunksize=rows, dtype=False)
            return
        import csv

        options = {"sep": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
        yield from pd.read_csv(path, chunksize=rows, keep_default_na=False, na_values=[""], **options)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"{path}: unreadable as {kind}: {first}") from None


def count_rows(path: str | Path) -> int | None:
    """How many rows a file holds, cheaply (Parquet's metadata; a line count for text formats), for the ETA."""
    path = Path(path)
    kind = INPUT_FORMATS.get(path.suffix.lower())
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return max(0, lines - (0 if kind == "jsonl" else 1))


def with_ids(rows: pd.DataFrame, answer: pd.DataFrame, start: int) -> pd.DataFrame:
    """The answer with the input's id column first (or ``row``, the row number from 0 when it has none).

    Args:
        rows: the input rows.
        answer: :meth:`Predictor.predict`'s answer for them.
        start: the first row's number in the file.
    """
    found = next((c for c in ID_COLUMNS if c in rows.columns), None)
    ids = rows[found].to_numpy() if found else np.arange(start, start + len(rows))
    answer = answer.reset_index(drop=True)
    answer.insert(0, found or "row", ids)
    return answer
