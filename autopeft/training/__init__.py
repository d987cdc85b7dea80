"""Proxy training: tokenisation cache, length-grouped batching, the training loop and evaluation."""

from __future__ import annotations

from autopeft.training.proxy import ProxyRequest, ProxySettings, evaluate, full_fidelity, run_proxy_trial

__all__ = ["ProxyRequest", "ProxySettings", "evaluate", "full_fidelity", "run_proxy_trial"]
