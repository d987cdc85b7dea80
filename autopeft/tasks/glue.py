"""GLUE tasks: their files in the standard download layout, labels and metrics."""

from __future__ import annotations

from autopeft.tasks.task import TaskSpec

GLUE_TASKS: dict[str, TaskSpec] = {
    "rte": TaskSpec(
        name="rte",
        glue_folder="RTE",
        hub_config="rte",
        text_fields=("sentence1", "sentence2"),
        label_field="label",
        labels=("entailment", "not_entailment"),
        metrics=("accuracy",),
    ),
    "mrpc": TaskSpec(
        name="mrpc",
        glue_folder="MRPC",
        hub_config="mrpc",
        text_fields=("#1 String", "#2 String"),
        hub_text_fields=("sentence1", "sentence2"),
        label_field="Quality",
        hub_label_field="label",
        labels=("0", "1"),
        metrics=("f1", "accuracy"),
    ),
    "cola": TaskSpec(
        name="cola",
        glue_folder="CoLA",
        hub_config="cola",
        text_fields=("sentence",),
        label_field="label",
        labels=("0", "1"),
        metrics=("mcc", "accuracy"),
        columns=("source", "label", "orig_label", "sentence"),
    ),
    "sst2": TaskSpec(
        name="sst2",
        glue_folder="SST-2",
        hub_config="sst2",
        text_fields=("sentence",),
        label_field="label",
        labels=("0", "1"),
        metrics=("accuracy",),
    ),
    "stsb": TaskSpec(
        name="stsb",
        glue_folder="STS-B",
        hub_config="stsb",
        text_fields=("sentence1", "sentence2"),
        label_field="score",
        hub_label_field="label",
        labels=None,
        metrics=("pearson", "spearman"),
    ),
}
"""Built-in tasks by name; the first metric of each is the one the search maximises."""
