"""autopeft: multi-objective search of parameter-efficient fine-tuning configurations.

The command line (``autopeft search | trial | pareto | trials | export | sync | ui``) is a thin
layer over :func:`autopeft.search.run_search`, :func:`autopeft.training.run_proxy_trial`,
:mod:`autopeft.pareto` and :mod:`autopeft.export`. :func:`load` rebuilds an exported configuration
on a model (a trained folder with its weights).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load"]


def load(path: Any, model: Any = None, trust_remote_code: bool = False) -> Any:
    """Rebuild an exported configuration on a model (see :func:`autopeft.model_folder.load`).

    Args:
        path: an export folder.
        model: a ``transformers`` sequence-classification model (default: the export's backbone).
        trust_remote_code: allow the backbone's own code when loading it here.
    """
    from autopeft.model_folder import load as load_export

    return load_export(path, model, trust_remote_code)
