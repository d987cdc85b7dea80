"""Is the predicted peak training memory right? Predicted against measured, on configurations that did not calibrate.

The backbone's memory model is calibrated as a search calibrates it (``memory_model``: rank-1 LoRA probes on the
top layer and the lowest). Then each configuration of :func:`configurations` (every method family, one layer to
all, full fine-tuning; none of them a probe) is measured as a trial measures it (``measure_memory``: the second
optimiser step of a copy of the model at the stated batch shape; on a CPU, live tensor bytes counted by
``LiveTensorBytes``; on a GPU, ``torch.cuda.max_memory_allocated``). The error is taken on the part that depends
on the configuration: the peak less what every configuration shares (the backbone, the head, the top layer's
activations). It imports no Optuna, Ray or MLflow (a GPU machine lent without them runs it).

    python bench/memory.py                      # the default backbone at 16x128 on this machine's device
    python bench/memory.py --shape 32x256

The last line is ``configs=<n> max_abs_error_pct=<x> median_abs_error_pct=<y> dependent_range=<fold>
shallow_max_abs_error_pct=<z>``: the goal's figures over the held-out configurations, and the same over the
shallow ones (the gradient entering the top two layers), reported apart.
"""

from __future__ import annotations

import argparse
import statistics
import time

from autopeft.methods.build import check_config, count_trainable
from autopeft.methods.config import TrialConfig
from autopeft.models import BackboneInfo, backbone_info, default_model
from autopeft.training.memory import parse_shape
from autopeft.training.proxy import ProxySettings, _device, measure_memory, memory_model

MIB = 2**20


def _config(info: BackboneInfo, methods: dict) -> TrialConfig:
    return check_config(TrialConfig(methods, {"learning_rate": 1e-3}), info)


def _sites(layers, modules, *size: int) -> list[list]:
    return [[layer, module, *size] for layer in layers for module in modules]


def configurations(info: BackboneInfo) -> dict[str, TrialConfig]:
    """Configurations spanning the space whose gradient passes at least two layers; none is a calibration probe."""
    layers, modules, middle = range(info.num_layers), info.modules, info.num_layers // 2
    return {
        "lora q,v every layer r8": _config(info, {"lora": {"targets": _sites(layers, ("query", "value"), 8)}}),
        "lora every site r16": _config(info, {"lora": {"targets": _sites(layers, modules, 16)}}),
        "lora ffn from layer 1 r4": _config(info, {"lora": {"targets": _sites(layers[1:], ("ffn_in", "ffn_out"), 4)}}),
        "lora value layer 1, dropout": _config(info, {"lora": {"targets": [[1, "value", 4]], "dropout": 0.1}}),
        "ia3 k,v,ffn_out every layer": _config(info, {"ia3": {"targets": _sites(layers, ("key", "value", "ffn_out"))}}),
        "ia3 k,v middle layer": _config(info, {"ia3": {"targets": [[middle, "key"], [middle, "value"]]}}),
        "serial adapters 1 and 2": _config(info, {"serial_adapter": {"targets": [[1, "attn", 8], [2, "ffn", 16]]}}),
        "parallel adapter layer 0": _config(info, {"parallel_adapter": {"targets": [[0, "ffn", 16]]}}),
        "prefix every layer": _config(info, {"prefix": {"targets": [[i, 8] for i in layers]}}),
        "full fine-tuning": _config(info, {"full_finetune": {}}),
    }  # fmt: skip


def shallow_configurations(info: BackboneInfo) -> dict[str, TrialConfig]:
    """Configurations whose gradient enters the top two layers only (the peak is then set by temporaries)."""
    top = info.num_layers - 1
    return {
        "lora q,v top two r8": _config(info, {"lora": {"targets": _sites((top - 1, top), ("query", "value"), 8)}}),
        "serial adapter attn, layer top-1": _config(info, {"serial_adapter": {"targets": [[top - 1, "attn", 16]]}}),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="backbone (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--shape", default="16x128", help="batch size x padded length")
    args = parser.parse_args()
    model_path, shape, settings = args.model or default_model(), parse_shape(args.shape), ProxySettings()
    info = backbone_info(model_path, 2)
    started = time.perf_counter()
    memory = memory_model(model_path, 2, settings, shape, None)
    calibration_s = time.perf_counter() - started
    shared = memory.shared(info)
    print(f"device {_device()}  shape {shape}  calibration {calibration_s:.0f} s  shared part {shared / MIB:.1f} MiB")
    columns = ("trainable", "predicted", "measured", "dependent")
    print(f"{'configuration':34s} " + " ".join(f"{c:>10s}" for c in columns) + f" {'error':>7s}")
    rows = {}
    for group, configs in (("held out", configurations(info)), ("shallow", shallow_configurations(info))):
        for name, config in configs.items():
            trainable = count_trainable(config, info)
            predicted = memory.predict(config, info, trainable)
            measured = measure_memory(model_path, 2, settings, config, shape)
            error = (predicted - measured) / (measured - shared)
            rows[name] = (group, measured - shared, error)
            print(
                f"{name:34s} {trainable:>10,d} {predicted / MIB:>9.1f}M {measured / MIB:>9.1f}M "
                f"{(measured - shared) / MIB:>9.1f}M {100 * error:>+6.1f}%"
            )
    held = [r for r in rows.values() if r[0] == "held out"]
    shallow = [r for r in rows.values() if r[0] == "shallow"]
    dependent = [r[1] for r in held]
    print(
        f"configs={len(held)} max_abs_error_pct={100 * max(abs(r[2]) for r in held):.1f} "
        f"median_abs_error_pct={100 * statistics.median(abs(r[2]) for r in held):.1f} "
        f"dependent_range={max(dependent) / min(dependent):.1f} "
        f"shallow_max_abs_error_pct={100 * max(abs(r[2]) for r in shallow):.1f}"
    )


if __name__ == "__main__":
    main()
