"""Every name autopeft stores: study and trial attributes in the Optuna storage, MLflow tags and parameters.

One home, so a reader and a writer cannot drift apart, and a test can check that everything a real search,
``retrain`` and ``baselines`` store is declared here (keys built from a trial number or a spec field are
declared as patterns). Stored names never change once written: stores written by earlier versions keep
being read (``LEGACY``).
"""

from __future__ import annotations

import re

# -- study attributes (Optuna ``study.user_attrs``) -------------------------------------------------------
SPEC = "autopeft.spec"
"""The spec the study was created with (URLs masked): what it searches, how it runs, where it writes."""
SETTINGS = "autopeft.settings"
"""What a study's trials depend on; a continued study must ask for the same."""
SELECTION_SEED = "autopeft.selection_seed"
"""The seed of the held-out selection part: the creating run's, kept for every later worker."""
SPACE_YAML = "autopeft.space_yaml"
TASK_YAML = "autopeft.task_yaml"
LIMIT = "autopeft.limit"
"""The budget's trainable-parameter limit."""
BACKBONE_PARAMS = "autopeft.backbone_params"
OBJECTIVES = "autopeft.objectives"
"""The objectives' names, the score first."""
PRIOR_NEG_LOSS = "autopeft.prior_neg_loss"
"""``neg_loss`` of predicting the training labels' distribution on the scored examples."""
SEARCH_RUNS = "autopeft.search_runs"
"""One record per finished search run: trials run, workers, the start-up estimate, wall seconds, verdict."""
FIRST_RUNG = "autopeft.first_rung"
"""``{"fraction", "settled", "events"}`` of the first rung (raised while nothing learns there)."""
CONFIRMING = "autopeft.confirming"
"""The trials whose confirmation runs are in flight (empty when none)."""
CONFIRM_PREFIX = "autopeft.confirm."
"""``autopeft.confirm.<trial>`` (or ``.status_quo``): a trial's confirmation runs (``{"seed", "values", "metric",
...}``); the status quo's match the seeds of the trial ``best`` picks."""
RETRAIN_PREFIX = "autopeft.retrain."
"""``autopeft.retrain.<trial>`` (or ``.status_quo``): a trial's full-fidelity retrain runs, one per seed."""
BASELINES = "autopeft.baselines"
"""On a baselines study: the task, model, budget and limit its baselines were sized for."""

MEMORY_MODEL = "autopeft.memory_model"
"""The calibrated memory model the study's ``memory`` objective and ``--memory-budget`` predict with (set once: a
continued study predicts with it on any machine)."""

# -- trial attributes (Optuna ``trial.user_attrs``) -------------------------------------------------------
CONFIG = "config"
"""The configuration the trial trains (``TrialConfig.to_dict``)."""
TRAINABLE_PARAMS = "trainable_params"
TRAINABLE_FRACTION = "trainable_fraction"
HEAD_PARAMS = "head_params"
TARGET_SPARSITY = "target_sparsity"
PREDICTED_MEMORY = "predicted_memory_gib"
"""The configuration's predicted peak training memory (GiB) at the study's memory shape, when it has a memory model;
its measured peak is kept beside it as ``measured_memory_gib``."""
SCORED_ON = "scored_on"
"""The split the trial was scored on (``selection`` or ``validation``)."""
METRIC = "metric"
"""The task's main metric, as the training measured it."""
METRICS = "metrics"
VALUES_AT_STOP = "values_at_stop"
"""A trial stopped at a rung: its objective values there (Optuna keeps none for a pruned trial)."""
FAIL_REASON = "fail_reason"
WITHDRAWN = "withdrawn"
"""A trial given back before training (other workers filled the study): it did not fail on its own."""
PROPOSAL = "proposal"
ASK_SECONDS = "ask_seconds"
RUNGS = "rungs"
"""The trial's rung records (``rung``, ``fraction``, ``step``, ``metric``, ``metrics``, ``score``, ``level``)."""
RESULT = (
    "seconds", "train_seconds", "eval_seconds", "rung_eval_seconds", "steps", "total_steps", "threads",
    "train_tokens", "final_loss", "rung_metrics", "rung_scores", "train_losses", "sparsity", "masks_path",
    "worker_rss_mb", "measured_memory_gib", "method_report",
)  # fmt: skip
"""Fields of a training's result kept as the trial's attributes."""
STATUS_QUO_RUN = ("label", "source", "note", "seed")
"""Attributes of the status quo's run (besides a trial's): its label, what ``--status-quo`` said, what fitting it
to the budget changed, its seed."""
BASELINE_RUN = ("baseline", "label", "seed", "settings", "epochs", "max_train_samples", "predictions")
"""Attributes of a baseline's run (besides a trial's)."""

TRIAL_ATTRIBUTES = (
    CONFIG, TRAINABLE_PARAMS, TRAINABLE_FRACTION, HEAD_PARAMS, TARGET_SPARSITY, SCORED_ON, METRIC, METRICS,
    VALUES_AT_STOP, FAIL_REASON, WITHDRAWN, PROPOSAL, ASK_SECONDS, RUNGS, *RESULT, *STATUS_QUO_RUN, *BASELINE_RUN,
)  # fmt: skip

# -- MLflow ----------------------------------------------------------------------------------------------
TAG_STUDY = "autopeft.study"
TAG_ROLE = "autopeft.role"
"""``parent``, ``trial``, ``status_quo``, ``confirm``, ``retrain`` or ``baseline``."""
TAG_TRIAL = "autopeft.trial"
TAG_STATE = "autopeft.state"
TAG_PARETO = "autopeft.pareto"
"""``true``/``false`` on trial runs; ``status_quo`` on the status quo's run."""
TAG_PARETO_TRIALS = "autopeft.pareto_trials"
TAG_FAIL_REASON = "autopeft.fail_reason"
TAG_SEED = "autopeft.seed"
TAG_SETTINGS = "autopeft.settings"
TAG_BASELINE = "autopeft.baseline"
TAG_NOTE = "mlflow.note.content"
"""MLflow's own tag its UI shows as a run's description: the parent's links its Pareto set's runs."""
MODEL_ALIASES = {"best": "champion", "knee": "knee"}
"""Pick -> alias of the study's registered model: the retrained ``best`` (the status quo's when nothing beat it) is
``champion``."""
MLFLOW_TAGS = (TAG_STUDY, TAG_ROLE, TAG_TRIAL, TAG_STATE, TAG_PARETO, TAG_PARETO_TRIALS, TAG_FAIL_REASON, TAG_SEED,
               TAG_SETTINGS, TAG_BASELINE)  # fmt: skip
PARAM_SPEC = "spec."
"""``spec.<field>``: the parent run's parameters, the study's spec flattened."""
PARAM_SPACE = "space."
"""``space.<dimension>``: a trial run's sampled values, by the space's dimension names."""
MLFLOW_PARAMS = ("seed", "max_train_samples")
"""Parameters of the runs of fixed configurations (retrain, baselines, the status quo)."""

# -- Ray job metadata (a submitted search) ------------------------------------------------------------------
JOB_STUDY = "autopeft.study"
JOB_TRIALS = "autopeft.trials"
JOB_WORKERS = "autopeft.workers"
JOB_STORAGE = "autopeft.storage"
"""The storage URL (masked) a submitted search writes to."""

LEGACY = {"evaluated_on": SCORED_ON}
"""Names earlier versions stored, and what they are read as."""

_PATTERNS = {
    "study": [re.escape(CONFIRM_PREFIX) + r"(\d+|status_quo)", re.escape(RETRAIN_PREFIX) + r"(\d+|status_quo)"],
    "param": [re.escape(PARAM_SPEC) + r".+", re.escape(PARAM_SPACE) + r".+"],
}


def declared(kind: str, name: str) -> bool:
    """Whether a stored name is declared here.

    Args:
        kind: ``study`` (a study attribute), ``trial`` (a trial attribute), ``tag`` (an MLflow tag) or
            ``param`` (an MLflow parameter).
        name: the name as stored.
    """
    names = {
        "study": (SPEC, SETTINGS, SELECTION_SEED, SPACE_YAML, TASK_YAML, LIMIT, BACKBONE_PARAMS, OBJECTIVES,
                  PRIOR_NEG_LOSS, SEARCH_RUNS, FIRST_RUNG, CONFIRMING, BASELINES),
        "trial": TRIAL_ATTRIBUTES,
        "tag": MLFLOW_TAGS,
        "param": MLFLOW_PARAMS,
    }[kind]  # fmt: skip
    return name in names or any(re.fullmatch(p, name) for p in _PATTERNS.get(kind, ()))


def read_scored_on(attrs: dict, default: str = "validation") -> str:
    """The split a trial was scored on, from its attributes (older stores named it ``evaluated_on``).

    Args:
        attrs: the trial's attributes.
        default: what stores older than the selection split mean (they scored on validation).
    """
    return attrs.get(SCORED_ON) or attrs.get("evaluated_on") or default
