"""The benches' pool hands every result back once, in this process, and prints one progress line per training."""

from __future__ import annotations

import re

from _pool import run_pool


def square(job: int) -> tuple[int, int]:
    return job, job * job


def test_every_result_lands_once_and_each_gets_a_progress_line_with_an_eta(capsys):
    landed: dict[int, int] = {}

    def store(result: tuple[int, int]) -> str:
        job, value = result
        assert job not in landed
        landed[job] = value
        return f"job {job}"

    run_pool([1, 2, 3, 4], square, 2, store)
    assert landed == {1: 1, 2: 4, 3: 9, 4: 16}
    lines = capsys.readouterr().out.splitlines()
    assert [re.match(r"\[(\d)/4 +\d+s, about \d+ min left\] job \d$", line).group(1) for line in lines] == list("1234")
