"""Where MobileViT-S spends its time under OpenVINO's CPU plugin, per kind of operation, for the stock conversion
and mvkit's IR variants, from the plugin's own per-node counters (PERF_COUNT), plus interleaved p50s.

    .venv/bin/python benchmarks/profile_openvino.py                  # mobilevit_s, 256 px
    .venv/bin/python benchmarks/profile_openvino.py --model mobilevit_xxs --calls 100

Variants (random weights: the counters measure speed only):
- stock: `ov.convert_model(timm model)` (fused SDPA attention, timm's unfold/fold);
- mvkit: mvkit's OpenVINO graph (`ready_for_openvino`: channels-last unfold/fold, attention as matmul + softmax
  with q, k and v from separate layers), at a static batch of 1 like the stock row;
- mvkit (one qkv layer): the graph every format gets (`ready_for_export`), timm's single qkv layer kept;
- mvkit + SDPA: mvkit's unfold/fold with timm's fused attention kept;
- mvkit int8: `mvkit quantize --method ptq -f openvino` (NNCF, calibrated on 64 flowers128 training photos), and
  the same with the attention ops kept float, and with NNCF's other choices: the mixed preset (asymmetric
  activations) and its transformer scheme (ModelType.TRANSFORMER), alone and together.
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


def variants(model: torch.nn.Module, size: int, work: Path, wanted: set[str] | None) -> dict:
    import openvino as ov

    from mvkit.compress import openvino_int8
    from mvkit.export.graph import ready_for_export
    from mvkit.export.openvino import ready_for_openvino
    from mvkit.models import save_checkpoint
    from mvkit.runtime.openvino_runtime import ir_file

    def converted(module):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return ov.convert_model(module, example_input=torch.zeros(1, 3, size, size))

    def with_sdpa():
        prepared = ready_for_export(model, size)
        for module in prepared.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = True
        return converted(prepared)

    checkpoint = work / "model.safetensors"
    save_checkpoint(model, checkpoint, source="random weights (speed only)")

    def int8(name: str, **options):
        artifact = openvino_int8.quantize_openvino(checkpoint, str(FLOWERS), count=64, out=work / name, **options)
        return ov.Core().read_model(str(ir_file(artifact.path)))

    builders = {"stock": lambda: converted(model.eval()), "mvkit": lambda: converted(ready_for_openvino(model, size)),
                "mvkit (one qkv layer)": lambda: converted(ready_for_export(model, size)),
                "mvkit + SDPA": with_sdpa, "mvkit int8": lambda: int8("int8"),
                "mvkit int8 (attention float)": lambda: int8("int8_attention", attention_float=True),
                # NNCF's other choices: asymmetric activations, and the scheme that leaves LayerNorm, softmax and
                # adds float and quantizes the attention's inputs
                "mvkit int8 (mixed preset)": lambda: int8("int8_mixed", preset="mixed"),
                "mvkit int8 (transformer scheme)": lambda: int8("int8_transformer", transformer=True),
                "mvkit int8 (mixed preset + transformer scheme)": lambda: int8("int8_mixed_transformer", preset="mixed",
                                                                        transformer=True)}
    return {name: build() for name, build in builders.items() if not wanted or name in wanted}


def run_block(timed, counted, image: np.ndarray, calls: int, walls: list, by_type: dict, by_node: dict) -> None:
    """`calls` timed calls (compiled without counters: PERF_COUNT adds about 3 ms per MobileViT-S call), then as
    many counted ones."""
    for _ in range(calls):
        time.sleep(0.05)  # runtimes leave threads spinning: a pause like mvkit bench's, shorter
        started = time.perf_counter()
        timed.infer({0: image})
        walls.append((time.perf_counter() - started) * 1000)
    for _ in range(calls):
        counted.infer({0: image})
        for node in counted.profiling_info:
            if node.status.name == "EXECUTED":
                ms = node.real_time.total_seconds() * 1000
                by_type[f"{node.node_type} ({node.exec_type.split('_')[0]})"] += ms
                by_node[f"{node.node_name} [{node.node_type} {node.exec_type}]"] += ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilevit_s")
    parser.add_argument("--calls", type=int, default=60, help="per variant, in --rounds interleaved blocks")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--nodes", type=int, default=0, help="also list this many slowest nodes per variant")
    parser.add_argument("--only", default=None, help="comma-separated variants: stock, mvkit, mvkit (one qkv layer), "
                        "mvkit + SDPA, mvkit int8, "
                        "mvkit int8 (attention float|mixed preset|transformer scheme|mixed preset + transformer scheme)")
    parser.add_argument("--threads", type=int, default=None, help="default: the latency hint's choice")
    args = parser.parse_args()
    import openvino as ov

    from mvkit.models.zoo import create_model

    model = create_model(args.model, num_classes=5, labels=sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())).eval()
    size = model.pretrained_cfg["input_size"][-1]
    image = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    core = ov.Core()
    work = tempfile.TemporaryDirectory()  # holds the int8 IRs' weights while they run
    wanted = set(args.only.split(",")) if args.only else None
    requests = {}
    for name, ov_model in variants(model, size, Path(work.name), wanted).items():
        for precision in ("default", "f32"):
            config = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": args.threads} if args.threads else {})}
            if precision == "f32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            timed = core.compile_model(ov_model, "CPU", config)
            ran = timed.get_property("INFERENCE_PRECISION_HINT").to_string()
            counted = core.compile_model(ov_model, "CPU", {**config, "PERF_COUNT": True})
            requests[f"{name}, {ran}"] = (timed.create_infer_request(), counted.create_infer_request())
    counts = {label: ([], defaultdict(float), defaultdict(float)) for label in requests}
    for pair in requests.values():
        for request in pair:
            for _ in range(10):
                request.infer({0: image})
    for _ in range(args.rounds):  # interleaved blocks: every variant sees the same machine state
        for label, (timed, counted) in requests.items():
            run_block(timed, counted, image, args.calls // args.rounds, *counts[label])
    calls = args.rounds * (args.calls // args.rounds)
    results = {label: (statistics.median(walls), {k: v / calls for k, v in by_type.items()},
                       {k: v / calls for k, v in by_node.items()}) for label, (walls, by_type, by_node) in counts.items()}
    print(f"{args.model} {size} px, batch 1, {args.calls} calls per variant")
    for label, (wall, by_type, by_node) in results.items():
        total = sum(by_type.values())
        print(f"\n## {label}: wall p50 {wall:.2f} ms, counted {total:.2f} ms")
        for kind, ms in sorted(by_type.items(), key=lambda item: -item[1])[:args.top]:
            print(f"  {kind:45s} {ms:6.2f} ms  {100 * ms / total:5.1f}%")
        for node, ms in sorted(by_node.items(), key=lambda item: -item[1])[:args.nodes]:
            print(f"    {ms:6.2f} ms  {node}")
    fastest_stock = min((wall for label, (wall, _, _) in results.items() if label.startswith("stock")), default=None)
    print("\n| variant | wall p50 ms | speedup vs stock's best |\n|---|---|---|")
    for label, (wall, _, _) in results.items():
        print(f"| {label} | {wall:.2f} | {f'{fastest_stock / wall:.2f}x' if fastest_stock else '-'} |")


if __name__ == "__main__":
    main()
