"""Shared fixtures: the local GLUE data, a tiny random BERT saved to disk, quiet libraries."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The GLUE folder: ``$AUTOPEFT_DATA_DIR`` or ``../shared/data/glue`` beside the checkout."""
    path = Path(os.environ.get("AUTOPEFT_DATA_DIR", REPO.parent / "shared" / "data" / "glue"))
    assert (path / "RTE" / "train.tsv").is_file(), f"GLUE data not found at {path}; set AUTOPEFT_DATA_DIR"
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 3-layer BERT (hidden 32) with the default model's tokenizer, on disk."""
    from transformers import BertConfig, BertForSequenceClassification

    from autopeft.models import default_model, load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer(default_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_info(tiny_model: str):
    """The tiny model's :class:`BackboneInfo` for a binary task."""
    from autopeft.models import backbone_info

    return backbone_info(tiny_model, 2)
