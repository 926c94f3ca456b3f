"""mvkit's artifacts against the stock path of each peer runtime, in one process, timed by mvkit bench's own method
(batch 1, warm-up, interleaved rounds with a pause before each call, medians), on real flowers128 photos.

    .venv/bin/python benchmarks/peers.py                      # 4 models, writes BENCHMARKS.md and results/peers.json
    .venv/bin/python benchmarks/peers.py --models mobilevit_s --rounds 20

Per model (ImageNet architecture with a 5-class flowers head; weights do not change speed, and timing uses the
model's own input size), rows in one interleaved run:
- peers, each used the way its documentation shows: PyTorch eager (NCHW), torch.compile (default), ONNX Runtime on
  torch's exporter with default options, OpenVINO `ov.convert_model(timm model)` at the CPU plugin's default
  precision, ExecuTorch XNNPACK with the stock `to_edge_transform_and_lower` flow;
- mvkit's artifacts (`mvkit export` / `mvkit quantize`): ONNX, ExecuTorch, OpenVINO, fp32 and int8.
Columns: p50, p90, speedup vs eager, ratio to the best peer, agreement of top-1 with the checkpoint on val photos.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_markdown import cpu_name, replace_section  # noqa: E402
from mvkit.artifact import Artifact  # noqa: E402
from mvkit.runtime.base import Predictor, softmax  # noqa: E402

FLOWERS = REPO.parent / "shared" / "data" / "flowers128"
MODELS = ["mobilevit_xxs", "mobilevit_s", "mobilenetv3_large_100", "tf_efficientnet_lite0"]


class PeerPredictor(Predictor):
    """A peer runtime's stock path behind mvkit's Predictor interface (same Preprocess as the checkpoint)."""

    def __init__(self, artifact: Artifact, label: str, call, batch_one: bool = False):
        super().__init__(artifact)
        self.label, self.call, self.batch_one = label, call, batch_one  # batch_one: exported for batch 1 only

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = [batch[i:i + 1] for i in range(len(batch))] if self.batch_one else [batch]
        return softmax(np.concatenate([np.asarray(self.call(part), dtype=np.float64) for part in parts]))


def stock_peers(model: torch.nn.Module, artifact: Artifact, work: Path) -> list[PeerPredictor]:
    import onnxruntime as ort
    import openvino as ov

    size = artifact.preprocess.size
    example = torch.zeros(1, 3, size, size)
    peers = []
    eager = model.eval()
    peers.append(PeerPredictor(artifact, "peer: PyTorch eager", lambda x: eager(torch.from_numpy(x)).detach().numpy()))
    compiled = torch.compile(model)
    with torch.inference_mode():
        peers.append(PeerPredictor(artifact, "peer: torch.compile",
                                   lambda x: compiled(torch.from_numpy(x)).detach().numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(work / "stock.onnx"), dynamo=True)
    session = ort.InferenceSession(str(work / "stock.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    peers.append(PeerPredictor(artifact, "peer: ONNX Runtime (torch exporter, defaults)",
                               lambda x: session.run(None, {name: x})[0], batch_one=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(model, example_input=example)
    request = ov.Core().compile_model(ov_model, "CPU").create_infer_request()
    peers.append(PeerPredictor(artifact, "peer: OpenVINO (convert_model, default precision)",
                               lambda x: request.infer({0: x})[0], batch_one=True))
    peers.append(stock_executorch(model, artifact, example))
    return peers


def stock_executorch(model, artifact: Artifact, example) -> PeerPredictor:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    program = to_edge_transform_and_lower(torch.export.export(model, (example,)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    buffer = program.buffer  # the runtime reads from it while the program lives: keep it referenced
    loaded = Runtime.get().load_program(buffer)
    method = loaded.load_method("forward")
    peer = PeerPredictor(artifact, "peer: ExecuTorch XNNPACK (stock lowering)",
                         lambda x: method.execute([torch.from_numpy(x)])[0].numpy(), batch_one=True)
    peer.keep = (buffer, loaded)
    return peer


def mvkit_artifacts(checkpoint: Path, out: Path) -> list[Path]:
    from mvkit.compress import plan_quantize, quantize
    from mvkit.export import export

    paths = [export(checkpoint, fmt, out).path for fmt in ("onnx", "executorch", "openvino")]
    paths.append(export(checkpoint, "openvino", out, precision="fp32").path)
    for plan in plan_quantize(checkpoint, "ptq", ["onnx", "executorch", "openvino"], str(FLOWERS)):
        paths.append(quantize(plan, checkpoint, str(FLOWERS), 128).path)
    return paths


def label_of(path: Path) -> str:
    sidecar = Artifact.load(path)
    precision = "int8" if sidecar.extra.get("quantization") else sidecar.extra.get("precision", "fp32")
    return f"mvkit: {sidecar.format} {precision}"


def measure(model_name: str, rounds: int, work: Path) -> list[dict]:
    from mvkit.bench import bench_predictors
    from mvkit.data import load_data
    from mvkit.data.datasets import take_evenly
    from mvkit.models import load_model, save_checkpoint
    from mvkit.models.zoo import create_model
    from mvkit.runtime import load_predictor

    splits = load_data(str(FLOWERS))
    model = create_model(model_name, num_classes=len(splits.classes), labels=splits.classes).eval()
    checkpoint = work / f"{model_name}.safetensors"
    save_checkpoint(model, checkpoint, source=f"{model_name}, 5-class head, randomly initialised (speed only)")
    reference = load_predictor(checkpoint)
    artifact = reference.artifact
    print(f"{model_name}: stock peers", flush=True)
    predictors = [*stock_peers(load_model(checkpoint), artifact, work)]
    print(f"{model_name}: mvkit artifacts", flush=True)
    predictors += [load_predictor(path) for path in mvkit_artifacts(checkpoint, work)]
    labels = [p.label if isinstance(p, PeerPredictor) else label_of(p.artifact.path) for p in predictors]
    val = take_evenly(splits.val, 64)
    photos = [val.image(i) for i in range(len(val))]
    print(f"{model_name}: timing {len(predictors)} rows", flush=True)
    rows = bench_predictors(predictors, photos[:8], rounds=rounds)
    expected = reference.predict_images(photos).argmax(-1)
    table = []
    for label, predictor, row in zip(labels, predictors, rows):
        agreement = float((predictor.predict_images(photos).argmax(-1) == expected).mean())
        table.append({"model": model_name, "row": label, "p50_ms": round(row.latency_p50_ms, 2),
                      "p90_ms": round(row.latency_p90_ms, 2), "agreement": agreement,
                      "runtime": getattr(predictor, "runtime", None)})
    eager = next(r for r in table if r["row"] == "peer: PyTorch eager")["p50_ms"]
    best_peer = min(r["p50_ms"] for r in table if r["row"].startswith("peer"))
    for row in table:
        row["speedup_vs_eager"] = round(eager / row["p50_ms"], 2)
        row["vs_best_peer"] = round(best_peer / row["p50_ms"], 2)
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| model | row | p50 ms | p90 ms | speedup vs eager | speedup vs best peer | agreement | ran as |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['model']} | {r['row']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['speedup_vs_eager']:.2f}x | "
                     f"{r['vs_best_peer']:.2f}x | {r['agreement']:.1%} | {r['runtime'] or '-'} |")
    return "\n".join(lines)


def measured_on(table: list[dict]) -> str:
    """Which CPU each model's rows ran on: a rerun of some models can be on another machine, so only the ratios
    within one model's rows compare."""
    machines: dict[str, list[str]] = {}
    for row in table:
        key = f"{row.get('cpu', 'CPU not recorded')}, {row.get('date', 'date not recorded')}"
        if row["model"] not in machines.setdefault(key, []):
            machines[key].append(row["model"])
    return "Measured on: " + "; ".join(f"{', '.join(models)}: {key}" for key, models in machines.items()) + "."


def merged_with_earlier(table: list[dict], command: str, models: list[str]) -> tuple[list[dict], str]:
    """A run of some models replaces only their rows: the other models' rows and commands are kept."""
    earlier = json.loads((RESULTS / "peers.json").read_text()) if (RESULTS / "peers.json").exists() else {}
    kept = [row for row in earlier.get("rows", []) if row["model"] not in models]
    if not kept:
        return table, command
    order = {name: index for index, name in enumerate(MODELS)}
    rows = sorted(kept + table, key=lambda row: order.get(row["model"], len(order)))  # stable: a model's rows in order
    # the first full run's command, then one clause per re-measured set of models, the latest run's only
    base, *clauses = earlier["command"].split("`; rows of ")
    ours = f"{', '.join(models)} re-measured by `"
    clauses = [clause for clause in clauses if not clause.startswith(ours)] + [ours + command]
    return rows, "`; rows of ".join([base, *clauses])


def write_section(table: list[dict], command: str) -> None:
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    replace_section("peers", "\n".join([
        "## mvkit's artifacts against each peer runtime's stock path (batch 1)", "",
        f"Machine: {machine}. Command: `{command}`. Each model's rows in one interleaved run (mvkit bench's "
        "timing: warm-up, 0.2 s pause before each call, medians). Agreement: top-1 against the checkpoint on 64 "
        "flowers128 val photos (random weights: a speed check, the accuracy budgets are checked in the format "
        "tables).", "", markdown(table), "", measured_on(table)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if not FLOWERS.is_dir():
        raise SystemExit(f"error: {FLOWERS} is missing (see ../shared/data/README.md)")
    torch.set_num_threads(torch.get_num_threads())
    table = []
    with tempfile.TemporaryDirectory() as folder:
        for model_name in args.models:
            table += measure(model_name, args.rounds, Path(folder))
    for row in table:
        row.update(cpu=cpu_name(), date=date.today().isoformat())
    RESULTS.mkdir(exist_ok=True)
    command = "python benchmarks/peers.py " + shlex.join(sys.argv[1:])
    table, command = merged_with_earlier(table, command, args.models)
    (RESULTS / "peers.json").write_text(json.dumps({"command": command, "rows": table}, indent=1))
    write_section(table, command)
    print(markdown(table))


if __name__ == "__main__":
    main()
