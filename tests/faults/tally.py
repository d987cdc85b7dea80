"""What the fault-injection suite found, fault by fault (summed up in one line at the end of the run)."""

TALLY = {"faults": 0, "resumed_clean": 0, "lost": 0, "duplicated": 0, "internal_errors": 0}
