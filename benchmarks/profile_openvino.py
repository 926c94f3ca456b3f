"""Where MobileViT-S spends its time under OpenVINO's CPU plugin, per kind of operation, for the stock conversion
and mvkit's IR variants, from the plugin's own per-node counters (PERF_COUNT), plus interleaved p50s.

    .venv/bin/python benchmarks/profile_openvino.py                  # mobilevit_s, 256 px
    .venv/bin/python benchmarks/profile_openvino.py --model mobilevit_xxs --calls 100

Variants (random weights: the counters measure speed only):
- stock: `ov.convert_model(timm model)` (fused SDPA attention, timm's unfold/fold);
- mvkit: mvkit's export graph (`ready_for_export`: attention as matmul + softmax, channels-last unfold/fold);
- mvkit + SDPA: mvkit's unfold/fold with timm's fused attention kept;
- mvkit int8: `mvkit quantize --method ptq -f openvino` (NNCF, calibrated on 64 flowers128 training photos).
Each at the plugin's default precision (bf16 where the CPU has it) and at f32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FLOWERS = REPO.parent / "shared" / "data" / "flowers128"
sys.path.insert(0, str(REPO / "src"))


def variants(model: torch.nn.Module, size: int, work: Path) -> dict:
    import openvino as ov

    from mvkit.export.graph import ready_for_export

    def converted(module):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return ov.convert_model(module, example_input=torch.zeros(1, 3, size, size))

    with_sdpa = ready_for_export(model, size)
    for module in with_sdpa.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    from mvkit.compress.openvino_int8 import quantize_openvino
    from mvkit.models import save_checkpoint
    from mvkit.runtime.openvino_runtime import ir_file

    checkpoint = work / "model.safetensors"
    save_checkpoint(model, checkpoint, source="random weights (speed only)")
    int8 = quantize_openvino(checkpoint, str(FLOWERS), count=64, out=work / "model.int8_openvino")
    return {"stock": converted(model.eval()), "mvkit": converted(ready_for_export(model, size)),
            "mvkit + SDPA": converted(with_sdpa), "mvkit int8": ov.Core().read_model(str(ir_file(int8.path)))}


def profile(compiled, image: np.ndarray, calls: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """Median wall ms per call, and the mean per-call ms of each node type (as the plugin ran it) and of each node."""
    request = compiled.create_infer_request()
    for _ in range(10):
        request.infer({0: image})
    walls, by_type, by_node = [], defaultdict(float), defaultdict(float)
    for _ in range(calls):
        time.sleep(0.02)  # runtimes leave threads spinning: a pause like mvkit bench's, shorter
        started = time.perf_counter()
        request.infer({0: image})
        walls.append((time.perf_counter() - started) * 1000)
        for node in request.profiling_info:
            if node.status.name == "EXECUTED":
                ms = node.real_time.total_seconds() * 1000
                by_type[f"{node.node_type} ({node.exec_type.split('_')[0]})"] += ms
                by_node[f"{node.node_name} [{node.node_type} {node.exec_type}]"] += ms
    return (statistics.median(walls), {k: v / calls for k, v in by_type.items()},
            {k: v / calls for k, v in by_node.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilevit_s")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--nodes", type=int, default=0, help="also list this many slowest nodes per variant")
    parser.add_argument("--only", default=None, help="comma-separated variants (stock, mvkit, mvkit + SDPA, mvkit int8)")
    parser.add_argument("--threads", type=int, default=None, help="default: the latency hint's choice")
    args = parser.parse_args()
    import openvino as ov

    from mvkit.models.zoo import create_model

    model = create_model(args.model, num_classes=5, labels=sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())).eval()
    size = model.pretrained_cfg["input_size"][-1]
    image = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    core = ov.Core()
    results = {}
    work = tempfile.TemporaryDirectory()  # holds the int8 IR's weights while it runs
    for name, ov_model in variants(model, size, Path(work.name)).items():
        if args.only and name not in args.only.split(","):
            continue
        for precision in ("default", "f32"):
            config = {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
                      **({"INFERENCE_NUM_THREADS": args.threads} if args.threads else {})}
            if precision == "f32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            compiled = core.compile_model(ov_model, "CPU", config)
            ran = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            results[f"{name}, {ran}"] = profile(compiled, image, args.calls)
    print(f"{args.model} {size} px, batch 1, {args.calls} calls per variant")
    for label, (wall, by_type, by_node) in results.items():
        total = sum(by_type.values())
        print(f"\n## {label}: wall p50 {wall:.2f} ms, counted {total:.2f} ms")
        for kind, ms in sorted(by_type.items(), key=lambda item: -item[1])[:args.top]:
            print(f"  {kind:45s} {ms:6.2f} ms  {100 * ms / total:5.1f}%")
        for node, ms in sorted(by_node.items(), key=lambda item: -item[1])[:args.nodes]:
            print(f"    {ms:6.2f} ms  {node}")


if __name__ == "__main__":
    main()
