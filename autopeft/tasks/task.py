"""A task file: where a task's examples are, which columns hold texts and labels, and its metric.

Every task, the built-in GLUE ones included (``tasks/*.yaml``), is a YAML file of this form::

    name: nli-mini
    train: data/train.jsonl            # paths relative to this file
    validation: data/dev.jsonl         # retrain/evaluate/report score here; a search never reads it
    selection: data/select.jsonl       # optional: what the search scores on (default: part of train)
    format: jsonl                      # csv | tsv | jsonl | parquet (default: from the extension)
    text_fields: [premise, hypothesis] # one or two columns
    label_field: label
    labels: [entailment, neutral, contradiction]   # or {raw value: class name}, or `type: regression`
    metric: macro_f1                   # accuracy | f1 | macro_f1 | mcc | pearson | spearman

Errors name the task file and the key: a missing file or column, a label outside ``labels``, an
empty split.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, field_validator, model_validator

from autopeft.errors import ConfigError, DataError
from autopeft.schema import Strict, read_model_file
from autopeft.tasks.metrics import METRICS

SPLITS = ("train", "validation", "test", "selection")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")


@dataclass(frozen=True)
class TaskData:
    """One split: one or two text columns and labels (class ids, or floats for regression)."""

    texts: tuple[list[str], ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


class HubSource(Strict):
    """Where the task lives on the Hugging Face hub, used when its files are not available locally."""

    dataset: str = Field(description="``datasets`` name (``nyu-mll/glue``)")
    config: str | None = Field(None, description="its configuration (``rte``)")
    text_fields: list[str] | None = Field(None, description="text columns there, when they differ from the files'")
    label_field: str | None = Field(None, description="label column there (class ids), when it differs")


class TaskSpec(Strict):
    """A sentence(-pair) classification or regression task defined by a task file."""

    name: str = Field(description="short name (study names and reports use it)")
    train: str = Field(description="training file, relative to the task file (or to --data-dir, see below)")
    validation: str = Field(
        description="validation file: retrain, evaluate, baselines and report score on it (a search never reads it)"
    )
    test: str | None = Field(None, description="optional test file (labels optional)")
    selection: str | None = Field(
        None, description="optional file the search scores trials on (default: a stratified part of train held out)"
    )
    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = Field(
        None, description="file format; default from each file's extension"
    )
    text_fields: list[str] = Field(min_length=1, max_length=2, description="one or two text columns")
    label_field: str = Field(description="the label column")
    labels: list[str] | dict[str, str] | None = Field(
        None, description="label values (class id = position), or a mapping raw value -> class name"
    )
    type: Literal["classification", "regression"] = Field("classification", description="task kind")
    metric: str = Field(description="metric the search maximises")
    extra_metrics: list[str] = Field(default_factory=list, description="further metrics reported beside it")
    paths_relative_to: Literal["file", "data_dir"] = Field(
        "file", description="'data_dir': paths are inside the folder given by --data-dir (GLUE's layout)"
    )
    header: bool = Field(True, description="csv/tsv: whether the first row names the columns")
    columns: list[str] | None = Field(None, description="csv/tsv without header: the column names")
    quoting: Literal["minimal", "none"] = Field(
        "minimal", description="csv/tsv quoting: 'none' reads quote characters as text (GLUE's files)"
    )
    hub: HubSource | None = Field(None, description="hub fallback when no local folder is given (data_dir tasks)")
    _source: Path | None = PrivateAttr(None)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value):
        if isinstance(value, list):
            return [_label_text(v) for v in value]
        if isinstance(value, dict):
            return {_label_text(k): str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        allowed = REGRESSION_METRICS if self.type == "regression" else CLASSIFICATION_METRICS
        for key, names in (("metric", [self.metric]), ("extra_metrics", self.extra_metrics)):
            for metric in names:
                if metric not in METRICS:
                    raise ValueError(f"{key}: unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
                if metric not in allowed:
                    raise ValueError(f"{key}: {metric!r} does not apply to {self.type}; use {', '.join(allowed)}")
        if self.type == "regression":
            if self.labels is not None:
                raise ValueError("labels: a regression task has no labels (remove them or the type)")
            return self
        if not self.labels:
            raise ValueError("labels: a classification task lists its labels (or set type: regression)")
        if len(self.class_names) < 2:
            raise ValueError(f"labels: at least two classes are needed, got {self.class_names}")
        if isinstance(self.labels, list) and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels: values must be distinct, got {self.labels}")
        if "f1" in (self.metric, *self.extra_metrics) and len(self.class_names) != 2:
            raise ValueError("metric: f1 is binary; use macro_f1 for more than two classes")
        if not self.header and not self.columns:
            raise ValueError("columns: a file without header needs its column names")
        return self

    # -- what the task is -------------------------------------------------------------------------
    @property
    def source(self) -> Path | None:
        """The task file this task was read from."""
        return self._source

    @property
    def is_regression(self) -> bool:
        """Whether the label is a real-valued score."""
        return self.type == "regression"

    @property
    def class_names(self) -> list[str]:
        """Class names in class-id order (empty for regression)."""
        if self.labels is None:
            return []
        values = self.labels if isinstance(self.labels, list) else list(self.labels.values())
        return list(dict.fromkeys(values))

    @property
    def num_labels(self) -> int:
        """Output width of the head (1 for regression)."""
        return 1 if self.is_regression else len(self.class_names)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every reported metric, the searched one first."""
        return (self.metric, *[m for m in self.extra_metrics if m != self.metric])

    def fingerprint(self, data_dir: str | Path | None) -> str:
        """A key that changes when the definition or its files change (size, modification time).

        Args:
            data_dir: the folder ``data_dir`` tasks read from.
        """
        files = []
        for split in ("train", "validation", "selection"):
            path = self.split_path(split, data_dir)
            stat = path.stat() if path is not None and path.is_file() else None
            files.append([str(path), stat and stat.st_size, stat and stat.st_mtime_ns])
        raw = json.dumps([self.model_dump(mode="json"), files], sort_keys=True)
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def split_file(self, split: str, data_dir: str | Path | None) -> dict[str, Any] | None:
        """What a run's dataset record says of a split's file: ``path``, ``sha256`` (of the file's bytes) and ``rows``
        (read once per file version). ``None`` when the split has no file here (the hub's).

        Args:
            split: ``train``, ``validation``, ``test`` or ``selection``.
            data_dir: the folder ``data_dir`` tasks read from.
        """
        path = self.split_path(split, data_dir)
        if path is None or not path.is_file():
            return None
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _FILE_FACTS:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            _FILE_FACTS[key] = (digest.hexdigest(), len(self.load_split(split, data_dir)))
        digest, rows = _FILE_FACTS[key]
        return {"path": str(path), "sha256": digest, "rows": rows}

    # -- reading the data --------------------------------------------------------------------------
    def split_path(self, split: str, data_dir: str | Path | None) -> Path | None:
        """The file of a split (``None``: no such split, or a data_dir task without a data folder).

        Args:
            split: ``train``, ``validation``, ``test`` or ``selection``.
            data_dir: the folder ``data_dir`` tasks read from.
        """
        relative = getattr(self, split)
        if relative is None:
            return None
        if self.paths_relative_to == "data_dir":
            return None if data_dir is None else Path(data_dir).expanduser() / relative
        base = self._source.parent if self._source is not None else Path.cwd()
        return (base / relative).resolve()

    def load_split(self, split: str, data_dir: str | Path | None = None) -> TaskData:
        """Read a split from its file (or the hub, for a data_dir task without a data folder).

        Args:
            split: ``train``, ``validation`` or ``test``.
            data_dir: the folder of ``data_dir`` tasks (``--data-dir``); unused by other tasks.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        where = self._where()
        if getattr(self, split) is None:
            raise DataError(f"{where}{split}: the task has no {split} split")
        path = self.split_path(split, data_dir)
        if path is None:
            return self._load_hub_split(split)
        if self.paths_relative_to == "data_dir" and not Path(data_dir).expanduser().is_dir():
            raise DataError(f"data folder {str(data_dir)!r} does not exist")
        if not path.is_file():
            raise DataError(f"{where}{split}: file {str(path)!r} does not exist")
        frame = self._read_frame(path, split)
        if len(frame) == 0:
            raise DataError(f"{where}{split}: {path} has no rows")
        for key, columns in (("text_fields", self.text_fields), ("label_field", [self.label_field])):
            for column in columns:
                if column not in frame.columns:
                    have = ", ".join(map(str, frame.columns))
                    raise DataError(f"{where}{key}: column {column!r} is missing in {path} (columns: {have})")
        texts = []
        for column in self.text_fields:
            values = frame[column].tolist()
            missing = next((row for row, v in enumerate(values) if v is None or v != v), None)  # None or NaN
            if missing is not None:
                raise DataError(f"{where}text_fields: {path} row {missing + 1}: column {column!r} is empty (null)")
            texts.append([v if isinstance(v, str) else str(v) for v in values])
        labels = self._encode_labels(frame[self.label_field].tolist(), path)
        return TaskData(texts=tuple(texts), labels=labels)

    def _where(self) -> str:
        return f"{self._source}: " if self._source is not None else f"task {self.name!r}: "

    def _read_frame(self, path: Path, split: str):
        import pandas as pd

        kind = self.format or FORMATS.get(path.suffix.lower())
        if kind is None:
            raise DataError(
                f"{self._where()}format: cannot tell the format of {path.name} from its extension; "
                f"set format to one of {', '.join(sorted(set(FORMATS.values())))}"
            )
        try:
            if kind == "jsonl":
                return pd.read_json(path, lines=True, dtype=False)
            if kind == "parquet":
                return pd.read_parquet(path)
            return pd.read_csv(
                path,
                sep="\t" if kind == "tsv" else ",",
                quoting=csv.QUOTE_NONE if self.quoting == "none" else csv.QUOTE_MINIMAL,
                keep_default_na=False,
                encoding="utf-8-sig",
                header="infer" if self.header else None,
                names=self.columns if not self.header else None,
                dtype=str,
            )
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            if "No columns to parse" in str(exc):
                raise DataError(f"{self._where()}{split}: {path} has no rows") from None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DataError(f"{self._where()}{split}: {path} is not valid {kind}: {first}") from None

    def _encode_labels(self, raw: list, path: Path) -> np.ndarray:
        where = f"{self._where()}label_field: {path}"
        if self.is_regression:
            values = np.empty(len(raw), dtype=np.float32)
            for row, value in enumerate(raw):
                try:
                    values[row] = float(value)
                except (TypeError, ValueError):
                    raise DataError(f"{where} row {row + 1}: {value!r} is not a number") from None
            return values
        names = self.class_names
        mapping = self.labels if isinstance(self.labels, dict) else {v: v for v in self.labels}
        index = {key: names.index(name) for key, name in mapping.items()}
        ids = np.empty(len(raw), dtype=np.int64)
        for row, value in enumerate(raw):
            key = _label_text(value)
            if key not in index:
                raise DataError(
                    f"{self._where()}labels: {path} row {row + 1}: label {key!r} is not one of {', '.join(index)}"
                )
            ids[row] = index[key]
        return ids

    def _load_hub_split(self, split: str) -> TaskData:
        if self.hub is None:
            raise DataError(f"{self._where()}paths_relative_to: data_dir: give the data folder (--data-dir)")
        try:
            import datasets
        except ImportError:
            raise DataError(
                f"task {self.name!r}: no local data folder given (--data-dir or AUTOPEFT_DATA_DIR) and "
                "the 'datasets' package is not installed to fetch it"
            ) from None
        try:
            table = datasets.load_dataset(self.hub.dataset, self.hub.config, split=split)
        except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear line
            raise DataError(
                f"task {self.name!r}: no local data folder given (--data-dir or AUTOPEFT_DATA_DIR) and the "
                f"hub is unreachable ({type(exc).__name__})"
            ) from None
        texts = tuple(list(table[f]) for f in self.hub.text_fields or self.text_fields)
        raw = table[self.hub.label_field or self.label_field]
        return TaskData(texts=texts, labels=np.asarray(raw, dtype=np.float32 if self.is_regression else np.int64))


def _label_text(value) -> str:
    """A raw label as text: ``1`` and ``1.0`` both read ``"1"`` (JSON and parquet keep numbers)."""
    if isinstance(value, bool):
        return str(value).lower()  # JSON true/false, as YAML writes them
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def load_task_file(path: str | Path) -> TaskSpec:
    """Read and validate a task file.

    Args:
        path: the YAML file.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"task file {str(path)!r} does not exist")
    task = read_model_file(path, TaskSpec, "name, train, validation, text_fields, ...")
    task._source = path
    return task


_FILE_FACTS: dict[tuple[str, int, int], tuple[str, int]] = {}
"""A split file's SHA-256 and row count, by (path, size, modification time): read once per version of a file."""
