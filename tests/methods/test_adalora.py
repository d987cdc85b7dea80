"""AdaLoRA in the proxy trainer: the allocator really runs and ends at the target rank budget."""

from autopeft.training import ProxyRequest, ProxySettings, run_proxy_trial

PLAN = {
    "targets": [[0, "query"], [1, "value"], [2, "ffn_in"]], "init_r": 8, "target_r": 2, "warmup": 0.1,
    "final": 0.2, "interval": 1, "alpha": 16.0, "dropout": 0.0, "orth_reg_weight": 0.5,
}  # fmt: skip


def test_update_and_allocate_runs_and_reaches_the_target_budget(tmp_path, tiny_model, data_dir):
    settings = ProxySettings(epochs=1, max_train_samples=160, max_eval_samples=32, batch_size=16)  # 10 steps
    config = {"methods": {"adalora": PLAN}, "training": {"learning_rate": 1e-3}}
    result = run_proxy_trial(ProxyRequest(tiny_model, "rte", data_dir, config, settings, cache_dir=str(tmp_path)))
    ranks = result["method_report"]["adalora_ranks"]
    assert len(ranks) == 3  # one allocation per adapted matrix
    assert sum(ranks.values()) == PLAN["target_r"] * 3  # the budget moved from 8 per matrix to 2 on average
    assert result["trainable_params"] == 8 * ((32 + 32 + 1) * 2 + (32 + 64 + 1))
