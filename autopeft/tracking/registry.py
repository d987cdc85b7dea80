"""A trained folder in MLflow's model registry: logged as a pyfunc model on its run, registered under the study's
name, and aliased (``champion``, ``knee``).

The flavour is a small ``pyfunc`` logged as code (:mod:`autopeft.tracking.pyfunc_model`) around
:class:`autopeft.inference.Predictor`: the folder's safetensors travel as the model's artifact, and the backbone is
resolved where the model is loaded (:func:`autopeft.models.resolve_backbone`), so it loads and serves offline.
``mlflow.transformers`` would record a peft adapter's base model as a hub id, which fails offline.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from autopeft.tracking.mlflow import Tracker


def requirements() -> list[str]:
    """What the model needs installed, pinned to this environment (MLflow's own inference loads the model once more
    in a subprocess; autopeft is not on an index, so ``--env-manager local`` is how it serves)."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in ("torch", "transformers", "peft", "safetensors", "pandas", "mlflow"):
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pinned


def register_trained(
    tracker: Tracker,
    folder: str | Path,
    run_id: str,
    aliases: list[str],
    example: pd.DataFrame,
    description: str = "",
    tags: dict[str, str] | None = None,
) -> str | None:
    """Log a trained folder as an MLflow model on ``run_id``, register it under the study's name, and give it
    ``aliases``; a run whose model is registered already keeps its version (a rerun of ``retrain`` registers nothing
    twice). An MLflow error turns tracking off, said once (the folder stays on disk).

    Args:
        tracker: the study's tracker.
        folder: the trained folder.
        run_id: the run that trained it (its ``retrain`` run).
        aliases: the registered version's aliases.
        example: a few rows of the task's text columns (the input example; the signature is inferred from it).
        description: the version's description (what it is, and its figures).
        tags: the version's tags.

    Returns:
        The registered version, or ``None`` when tracking is off.
    """
    return tracker.guarded(_register, tracker, Path(folder), run_id, aliases, example, description, tags or {})


def _register(
    tracker: Tracker,
    folder: Path,
    run_id: str,
    aliases: list[str],
    example: pd.DataFrame,
    description: str,
    tags: dict[str, str],
) -> str:
    import mlflow
    from mlflow.models import infer_signature

    from autopeft.inference import Predictor
    from autopeft.tracking import pyfunc_model

    existing = tracker.client.search_model_versions(f"name = '{tracker.study}' and run_id = '{run_id}'")
    if existing:  # a rerun of retrain: the same run's model is registered already; only the aliases move
        version = str(max(int(v.version) for v in existing))
        for alias in aliases:
            tracker.client.set_registered_model_alias(tracker.study, alias, version)
        return version
    signature = infer_signature(example, Predictor(folder).predict(example))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracker.uri)
    mlflow.set_registry_uri(tracker.uri)
    try:
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.pyfunc.log_model(
                name="model",
                python_model=pyfunc_model.__file__,
                artifacts={pyfunc_model.MODEL_ARTIFACT: str(folder)},
                signature=signature,
                input_example=example,
                pip_requirements=requirements(),
                registered_model_name=tracker.study,
            )
    finally:
        mlflow.set_tracking_uri(previous)
    version = str(logged.registered_model_version)
    if description:
        tracker.client.update_model_version(tracker.study, version, description=description)
    for key, value in tags.items():
        tracker.client.set_model_version_tag(tracker.study, version, key, value)
    for alias in aliases:
        tracker.client.set_registered_model_alias(tracker.study, alias, version)
    return version
