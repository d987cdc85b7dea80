"""The driver's allocator returns the sampler's freed tensors: a proposal's pattern (tensors growing with the study,
freed after each proposal, a small object kept per trial) grows the resident size with glibc's default threshold,
and not once it is fixed."""

from __future__ import annotations

import subprocess
import sys

import pytest

PATTERN = """
import sys, torch
from autopeft.execution.allocator import keep_large_blocks_mmapped, release_free_memory
if sys.argv[1] == "fixed":
    assert keep_large_blocks_mmapped()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
torch.set_num_threads(1)
kept, base = [], None
for n in range(20, 260, 4):  # a growing study: every proposal's tensors are larger, and freed again
    x = torch.randn(n, 18, dtype=torch.double)
    for _ in range(2):
        k = torch.cdist(x, x).exp_() + torch.eye(n, dtype=torch.double)
        factor = torch.linalg.cholesky(k @ k.T + n * torch.eye(n, dtype=torch.double))
        batch = torch.randn(32, n, n, dtype=torch.double)  # batched acquisition values
        del k, factor, batch
    kept.append(torch.randn(50))  # a small object each trial keeps (a stored result)
    if sys.argv[1] == "trimmed":
        release_free_memory()
    if base is None and n >= 100:
        base = rss()
print(rss() - base)
"""


def growth(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_fixed_thresholds_or_a_trim_after_each_trial_return_the_freed_tensors_of_a_growing_study():
    default, fixed, trimmed = growth("default"), growth("fixed"), growth("trimmed")
    assert fixed < 30, f"resident size grew {fixed:.0f} MB with the thresholds fixed"
    assert trimmed < 30, f"resident size grew {trimmed:.0f} MB with a trim after each trial"
    assert default > 100 + max(fixed, trimmed), f"the pattern should grow without either ({default:.0f} MB)"
