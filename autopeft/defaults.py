"""Default settings of a search, in one place (light to import: the CLI reads them for ``--help``)."""

TRIALS = 24
"""Finished trials a study should hold."""
WORKERS = 2
"""Trials run at the same time (fits a 2-core machine with one thread per trial)."""
EPOCHS = 1.0
"""Proxy training epochs over the sub-sampled training split."""
MAX_TRAIN_SAMPLES = 2048
"""Training examples per trial. With the ``neg_loss`` score at batch 8 this many rank as full training does
at rho 0.76 (MRPC) and 0.74 (RTE), for 62% (MRPC) of the whole split's cost, which ranks at 0.87 and 0.72
(fidelity bench, README)."""
BATCH_SIZE = 8
"""Proxy training batch size (8: twice the optimiser steps of 16 for the same examples; at 16 one epoch
leaves MRPC at the majority class and ranks at rho <= 0.3, at 8 it ranks at 0.78 F1; see README)."""
FULL_EPOCHS = 3.0
"""Full fidelity (retrain, evaluate, baselines, the fidelity bench's reference): epochs of the whole train split."""
FULL_BATCH_SIZE = 16
"""Full fidelity's batch size (the usual LoRA fine-tune's; the proxy's may differ)."""
MAX_LENGTH = 128
"""Truncation length in tokens."""
RUNGS = (1 / 4, 1 / 2)
"""Fractions of the proxy training at which early stopping compares a trial with its peers."""
REDUCTION = 4.0
"""Early stopping: a trial stops when at least 1/REDUCTION of a rung's trials sit in better fronts
(4: the top quarter goes on; with 3, one seed of three saved only 28% of the training, see README)."""
GRACE = 6
"""Early stopping: trials a rung must have seen before any trial stops there."""
OBJECTIVES = "neg_loss,params"
"""What a search optimises: minus the selection split's mean loss (the task metric is measured and shown
beside it), and the trainable fraction. After one proxy epoch most configurations still predict MRPC's
majority class, so F1 ties at 0.807 while the loss keeps ranking: on the selection split neg_loss ranks
as full training on validation at rho 0.87 (MRPC) and 0.72 (RTE), the metric at 0.78 and 0.62 (README)."""
CONFIRM = 4
"""Confirmation runs at the end of a search: ``best`` and ``knee`` trained again with another seed
(usually 2 runs; up to 4 when a confirmation moves a pick to a trial not yet confirmed)."""
EARLY_STOPPING_SCORES = ("neg_loss", "train_loss", "metric")
"""What early-stopping rungs can compare (see :class:`autopeft.study.EarlyStopping`)."""
