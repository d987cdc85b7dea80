"""Default settings of a search, in one place (light to import: the CLI reads them for ``--help``)."""

TRIALS = 16
"""Configurations a study should hold (each starts at the first rung; the status quo is not one of them)."""
WORKERS = 2
"""Trials run at the same time (fits a 2-core machine with one thread per trial)."""
FULL_EPOCHS = 3.0
"""Full fidelity: epochs of the whole train split (less the selection part, in a search), as ``retrain`` trains."""
FULL_BATCH_SIZE = 16
"""Full fidelity's batch size (the usual LoRA fine-tune's)."""
EPOCHS = FULL_EPOCHS
"""A search trains every trial on the full schedule: its rungs are fractions of it."""
MAX_TRAIN_SAMPLES = None
"""Training examples a trial draws (``None``: the whole train split less the selection part)."""
BATCH_SIZE = FULL_BATCH_SIZE
"""A trial's training batch size."""
MAX_LENGTH = 128
"""Truncation length in tokens."""
FIRST_RUNG = 2 / 9
"""The first rung, as a fraction of the full schedule: every trial is scored there. Measured with the fidelity
bench (10 configurations, rho of the rung's neg_loss with full training's validation metric): MRPC 0.63 at 1/9,
0.85 at 2/9, 0.88 at 1/3; RTE 0.41 at 1/9, 0.42 at 2/9, 0.46 at 1/3 (its noise ceiling, seed vs seed: 0.60)."""
FIRST_RUNG_CAP = 1 / 3
"""The first rung is raised (doubled) while no score there clears the label prior; never past this fraction."""
REDUCTION = 3.0
"""Successive halving's eta: a trial goes on past a rung only within the top 1/REDUCTION of the rung's entries
(non-dominated fronts); rungs lie at FIRST_RUNG x REDUCTION^k of the schedule, then 1."""
GRACE = 3
"""Entries a rung must have seen (the status quo included) before a trial stops there."""
RUNG_SCORE = "neg_loss"
"""What rungs rank on: minus the selection loss (orders trials whose thresholded metric still ties) or ``metric``."""
RUNG_SCORES = ("neg_loss", "metric")
"""What rungs can rank on."""
OBJECTIVES = "metric,params"
"""What a search optimises at full fidelity, where the picks are made: the task metric on the selection split,
and the trainable fraction."""
CONFIRM = 4
"""Confirmation runs at the end of a search, at full fidelity: ``best`` and ``knee`` trained again with another
seed (one run when they are one trial; more when a confirmation moves a pick to a trial not yet confirmed). With
2, a pick was left on one seed in each of the last three quality searches (MRPC, CoLA, STS-B: each confirmation
moved a pick to the next lucky draw); the status quo's confirmations come on top."""
STATUS_QUO = "lora"
"""The user's own default, trained beside every search at full fidelity: a ``baselines`` definition's name."""
HEARTBEAT_GRACE_S = 30.0
"""Seconds without a heartbeat after which a running trial counts as dead (its search was killed); the
heartbeat beats three times within it."""
