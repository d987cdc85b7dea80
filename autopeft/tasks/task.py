"""A task: where its examples come from, what their labels are, and how predictions are scored."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autopeft.errors import DataError


@dataclass(frozen=True)
class TaskData:
    """One split: one or two text columns and labels (class ids, or floats for regression)."""

    texts: tuple[list[str], ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TaskSpec:
    """A sentence(-pair) classification or regression task.

    Attributes:
        name: short name (``rte``).
        text_fields: one or two column names holding the texts.
        label_field: column holding the label.
        labels: label values as they appear in the files (index = class id); ``None`` for regression.
        metrics: metric names; the first is the search objective.
        glue_folder: folder name inside a GLUE data directory (``RTE``).
        hub_config: ``datasets`` config of ``nyu-mll/glue`` used when no local folder is given.
        columns: column names for header-less files (CoLA); ``None`` when the file has a header.
        hub_text_fields: text columns on the hub, when they differ from the files'.
        hub_label_field: label column on the hub, when it differs from the files'.
    """

    name: str
    text_fields: tuple[str, ...]
    label_field: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    glue_folder: str | None = None
    hub_config: str | None = None
    columns: tuple[str, ...] | None = None
    hub_text_fields: tuple[str, ...] | None = None
    hub_label_field: str | None = None

    @property
    def is_regression(self) -> bool:
        """Whether the label is a real-valued score."""
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output width of the head (1 for regression)."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def metric(self) -> str:
        """The metric the search maximises."""
        return self.metrics[0]

    def load_split(self, split: str, data_dir: str | Path | None) -> TaskData:
        """Read ``train`` or ``dev`` from a local GLUE folder, or from the hub when none is given.

        Args:
            split: ``train`` or ``dev``.
            data_dir: GLUE folder holding ``<glue_folder>/<split>.tsv``; ``None`` for the hub.
        """
        if data_dir is None:
            return self._load_hub_split(split)
        return self._load_tsv_split(Path(data_dir), split)

    def _load_tsv_split(self, data_dir: Path, split: str) -> TaskData:
        import pandas as pd

        if not data_dir.is_dir():
            raise DataError(f"data folder {str(data_dir)!r} does not exist")
        path = data_dir / (self.glue_folder or self.name) / f"{split}.tsv"
        if not path.is_file():
            raise DataError(f"task {self.name!r}: split file {str(path)!r} is missing")
        frame = pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            encoding="utf-8-sig",
            header=None if self.columns else "infer",
            names=list(self.columns) if self.columns else None,
            dtype=str,
        )
        for column in (*self.text_fields, self.label_field):
            if column not in frame.columns:
                raise DataError(f"{path}: column {column!r} is missing (columns: {', '.join(map(str, frame.columns))})")
        if len(frame) == 0:
            raise DataError(f"{path}: the split is empty")
        texts = tuple(frame[c].tolist() for c in self.text_fields)
        return TaskData(texts=texts, labels=self._encode_labels(frame[self.label_field].tolist(), str(path)))

    def _encode_labels(self, raw: list, source: str) -> np.ndarray:
        if self.labels is None:
            try:
                return np.asarray([float(v) for v in raw], dtype=np.float32)
            except ValueError as exc:
                raise DataError(f"{source}: column {self.label_field!r}: {exc}") from None
        index = {value: i for i, value in enumerate(self.labels)}
        ids = np.empty(len(raw), dtype=np.int64)
        for row, value in enumerate(raw):
            key = str(value).strip()
            if key not in index:
                raise DataError(f"{source}: row {row + 1}: label {key!r} is not one of {', '.join(self.labels)}")
            ids[row] = index[key]
        return ids

    def _load_hub_split(self, split: str) -> TaskData:
        try:
            import datasets
        except ImportError:
            raise DataError(
                f"task {self.name!r}: no local data folder given (--data-dir or AUTOPEFT_DATA_DIR) and "
                "the 'datasets' package is not installed to fetch it"
            ) from None
        hub_split = "validation" if split == "dev" else split
        try:
            table = datasets.load_dataset("nyu-mll/glue", self.hub_config or self.name, split=hub_split)
        except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear line
            raise DataError(
                f"task {self.name!r}: no local data folder given (--data-dir or AUTOPEFT_DATA_DIR) and the "
                f"hub is unreachable ({type(exc).__name__})"
            ) from None
        fields = self.hub_text_fields or self.text_fields
        texts = tuple(list(table[f]) for f in fields)
        raw = table[self.hub_label_field or self.label_field]
        labels = np.asarray(raw, dtype=np.float32 if self.is_regression else np.int64)
        return TaskData(texts=texts, labels=labels)
