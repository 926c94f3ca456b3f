"""Verify an exported artifact against the checkpoint it came from, on real photos, each in its own runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mvkit.artifact import CHECKPOINT_SUFFIX, Artifact
from mvkit.data.datasets import DataSplits, check_data_spec, load_data_as_trained, take_evenly
from mvkit.errors import MvkitError
from mvkit.evaluate import match_classes
from mvkit.formats import FORMATS, resolve
from mvkit.predict import as_predictor
from mvkit.runtime import Predictor, load_predictor, reading


@dataclass
class VerifyReport:
    artifact: str
    format: str
    reference: str
    count: int
    agreement: float  # share of photos where both give the same top-1 class
    max_abs_prob_diff: float
    mean_abs_prob_diff: float
    artifact_top1: float | None  # accuracy against the dataset labels, when the classes match
    reference_top1: float | None
    threshold: float
    passed: bool
    structure: dict | None = None  # Core ML: what the package holds, and what is wrong with it
    problems: list[str] | None = None
    runtime: str | None = None  # e.g. Core ML packages on Linux run in mvkit's numpy MIL interpreter
    # on macOS: mvkit's interpreter against real Core ML on the same photos (agreement, max/mean |dp|)
    interpreter_vs_coreml: dict | None = None
    # the photos whose top-1 changed, and the largest lead the reference's top class had over its second on
    # them: a few points or less means near ties, which any reduced precision flips
    flips: int = 0
    largest_flipped_lead: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


EXPECTED_COMPRESSION_OPS = {"int8": "constexpr_affine_dequantize", "palettize4": "constexpr_lut_to_dense",
                            "palettize6": "constexpr_lut_to_dense", "palettize8": "constexpr_lut_to_dense",
                            "prune50": "constexpr_sparse_to_dense"}


def coreml_structure_problems(artifact: Artifact, summary) -> list[str]:
    """What a Vision-ready classifier package must show, compared with what its sidecar says was asked."""
    problems = []
    if summary.input_kind != "imageType":
        problems.append(f"input {summary.input_name} is a {summary.input_kind}, not an image (Vision needs ImageType)")
    if summary.color_space != "RGB":
        problems.append(f"input colour space is {summary.color_space}, expected RGB")
    if sorted(summary.sizes) != sorted(artifact.extra.get("sizes", summary.sizes)):
        problems.append(f"input sizes {summary.sizes}, sidecar says {artifact.extra.get('sizes')}")
    if list(summary.labels) != list(artifact.labels):
        problems.append(f"class labels differ from the sidecar's ({len(summary.labels)} vs {len(artifact.labels)})")
    if "classLabel" not in summary.outputs or "classLabel_probs" not in summary.outputs:
        problems.append(f"outputs {summary.outputs}: not a classifier (no classLabel / classLabel_probs)")
    if not summary.op_counts.get("softmax"):
        problems.append("no softmax in the program: Vision's confidences would not be probabilities")
    compression = artifact.extra.get("compression", "none")
    expected = EXPECTED_COMPRESSION_OPS.get(compression)
    if expected and not summary.compression_ops.get(expected):
        problems.append(f"compression {compression} asked, but the program has no {expected} op")
    precision = artifact.extra.get("precision")
    dtypes = summary.weight_dtypes
    if precision == "fp16" and compression == "none" and dtypes.get("FLOAT16", 0) < dtypes.get("FLOAT32", 0):
        problems.append(f"fp16 asked, but most weights are stored as {dtypes}")
    if precision == "fp32" and dtypes.get("FLOAT16", 0) > dtypes.get("FLOAT32", 0):
        problems.append(f"fp32 asked, but most weights are stored as {dtypes}")
    return problems


def coreml_structure(path: Path | str) -> tuple[dict, list[str]]:
    """What a Core ML package holds (labels counted, not listed), and what keeps it from serving Vision."""
    from mvkit.coreml.package import read_package

    summary = read_package(path)
    problems = coreml_structure_problems(Artifact.load(Path(path)), summary)
    return {k: v for k, v in summary.to_dict().items() if k != "labels"} | {"num_labels": len(summary.labels)}, problems


def _check_source_unchanged(artifact: Artifact, source: str) -> None:
    """The checkpoint must be the one the file was exported from (the file records its sha256): one trained again
    into the same run folder would fail the file for a reason that is not the export's."""
    from mvkit.metadata import read_facts, sha256_of

    if not Path(source).is_file():
        return  # a model name
    try:
        facts = read_facts(Path(artifact.path))
    except MvkitError:
        return  # a damaged file: its runtime says so next
    recorded = (facts.metadata or {}).get("source_sha256") if facts else None
    if recorded and sha256_of(Path(source)) != recorded:
        raise MvkitError(f"{source} has changed since {artifact.path} was exported from it (its sha256 is not the "
                         f"one the file records): export it again, or give --reference {source} to compare with "
                         "the checkpoint as it is now")


def reference_predictor(artifact: Artifact) -> Predictor:
    """The model the artifact was exported from, in PyTorch."""
    source = artifact.source
    if source is None:
        raise MvkitError(f"{artifact.path} does not record its source checkpoint; give one with --reference")
    if source.endswith(CHECKPOINT_SUFFIX) and not Path(source).exists():
        raise MvkitError(f"{artifact.path} was made from {source}, which is not there any more; give the "
                         "checkpoint with --reference")
    _check_source_unchanged(artifact, source)
    return as_predictor(source, pretrained=bool(artifact.extra.get("source_pretrained")),
                        weights=artifact.extra.get("source_weights"))


def _accuracy(probabilities: np.ndarray, labels: np.ndarray, index: list[int] | None) -> float | None:
    if index is None:
        return None
    return float((probabilities.argmax(axis=1) == np.asarray(index)[labels]).mean())


def verify(artifact_path: Path | str, data: str | DataSplits, threshold: float = 0.99, limit: int | None = None,
           reference: str | Path | None = None, split: str = "val", batch_size: int = 32,
           progress: Callable[[str, int], Callable[[int], None]] | None = None,
           decoded: dict | None = None) -> VerifyReport:
    """`data`: a dataset spec (split as the source checkpoint was trained, when it recorded its split) or
    DataSplits already loaded. `progress(description, total)` -> advance(n): one bar for each model.
    `decoded`: a dict shared by several calls, so each split of the data is decoded once."""
    if not 0.0 <= threshold <= 1.0:
        raise MvkitError(f"--threshold must be in [0, 1], not {threshold}")
    if limit is not None and limit < 1:
        raise MvkitError(f"--limit must be at least 1, not {limit}")
    if not isinstance(data, DataSplits):
        check_data_spec(data, "--data")
    structure, problems = None, None
    row = FORMATS.get(Artifact.load(Path(artifact_path)).format)
    if row is not None and row.structure_check:  # structure first, then numbers
        with reading(Path(artifact_path), row.name, "mvkit's structure check"):
            structure, problems = resolve(row.structure_check)(artifact_path)
    candidate = load_predictor(artifact_path)
    same_file = reference is not None and Path(reference).exists() and \
        Path(reference).resolve() == Path(artifact_path).resolve()
    if same_file:  # a checkpoint measured against itself: accuracy only, agreement 1 by definition
        baseline = candidate
    else:
        baseline = as_predictor(reference) if reference else reference_predictor(candidate.artifact)
    splits = data if isinstance(data, DataSplits) else load_data_as_trained(data, candidate.artifact, decoded)
    dataset = splits.val if split == "val" else splits.train
    if limit:
        dataset = take_evenly(dataset, limit)
    try:
        index = match_classes(dataset.classes, candidate.labels)
    except MvkitError:
        index = None  # e.g. an ImageNet model on flower photos: agreement still means something
    def bar(description: str) -> Callable[[int], None] | None:
        return progress(description, len(dataset)) if progress else None

    ours, labels = candidate.predict_dataset(dataset, batch_size, bar(f"{candidate.artifact.format} artifact"))
    theirs = ours if baseline is candidate else baseline.predict_dataset(dataset, batch_size, bar("reference"))[0]
    agreement, max_difference, mean_difference = compare(ours, theirs)
    cross_check = None
    if getattr(candidate, "uses_core_ml", False):  # macOS: is the interpreter that Linux relies on faithful?
        from mvkit.runtime.coreml_runtime import CoreMLPredictor

        interpreted = CoreMLPredictor(candidate.artifact, interpreter=True).predict_dataset(
            dataset, batch_size, bar("mvkit interpreter"))[0]
        cross_check = dict(zip(("agreement", "max_abs_prob_diff", "mean_abs_prob_diff"), compare(interpreted, ours)))
    return VerifyReport(
        artifact=str(artifact_path), format=candidate.artifact.format, reference=str(reference or candidate.artifact.source),
        count=len(labels), agreement=agreement, max_abs_prob_diff=max_difference,
        mean_abs_prob_diff=mean_difference, artifact_top1=_accuracy(ours, labels, index),
        reference_top1=_accuracy(theirs, labels, index), threshold=threshold,
        passed=agreement >= threshold and not problems, runtime=candidate.runtime,
        structure=structure, problems=problems, interpreter_vs_coreml=cross_check,
        **flipped_leads(ours, theirs))


def compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, max |dp|, mean |dp|) of two probability arrays over the same photos."""
    difference = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return float((ours.argmax(axis=1) == theirs.argmax(axis=1)).mean()), float(difference.max()), float(difference.mean())


def flipped_leads(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """How many photos changed top-1, and the reference's largest lead of its top class over the next on them."""
    flipped = ours.argmax(axis=1) != theirs.argmax(axis=1)
    if not flipped.any():
        return {"flips": 0, "largest_flipped_lead": None}
    top_two = np.sort(theirs[flipped].astype(np.float64), axis=1)[:, -2:]
    return {"flips": int(flipped.sum()), "largest_flipped_lead": float((top_two[:, 1] - top_two[:, 0]).max())}
