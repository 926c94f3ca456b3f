"""Op conformance of mvkit's Core ML interpreter against coremltools' own MIL op tests.

    .venv/bin/python benchmarks/coreml_conformance.py                    # iOS14..iOS18 op tests, ML program cases
    .venv/bin/python benchmarks/coreml_conformance.py --files iOS17/test_conv.py -k smoke --explore

coremltools ships parametrized op tests with numpy expected outputs; they call Core ML only on macOS. This
script runs them with a pytest plugin that says "macOS" and routes each prediction to mvkit's interpreter
(mvkit.coreml.interpreter.Program on the test's temporary .mlpackage). Neural-network (non ML program) cases
are skipped: the interpreter runs ML programs only. Results per test class (roughly one op each) go to
benchmarks/results/coreml_conformance.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # batched matmul with threaded OpenBLAS was pathological here

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))


class InterpreterPlugin:
    """Pretend to be macOS and answer MLModel predictions with the interpreter."""

    def __init__(self, explore: bool = False):
        self.explore = explore
        self.outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: dict[str, str] = {}

    def pytest_configure(self, config):
        import coremltools
        import coremltools.converters.mil.testing_utils as testing_utils
        import numpy as np
        import coremltools.models.utils as model_utils

        from mvkit.coreml.interpreter import Program
        from mvkit.coreml.ops.common import PredictionError

        def predict(mlmodel, input_key_values, state=None):
            if mlmodel.get_spec().WhichOneof("Type") != "mlProgram":
                pytest.skip("neural-network model: the interpreter runs ML programs only")
            feeds = {k: np.array([v]) if np.isscalar(v) else v for k, v in input_key_values.items()}
            try:
                return Program(mlmodel.package_path).run(feeds, state=state)
            except PredictionError as exc:  # what coremltools' binding raises when Core ML fails a prediction
                raise RuntimeError(f"Unable to compute the prediction using ML Program: {exc}") from exc

        testing_utils._IS_MACOS = True
        testing_utils.run_core_ml_predict = predict
        coremltools.models.MLModel.predict = lambda self, data, state=None: predict(self, data, state)
        coremltools.models.MLModel.make_state = lambda self: Program(self.package_path).make_state()
        model_utils._macos_version = lambda: (15, 0)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            parts = report.nodeid.split("::")
            group = "::".join(parts[:2]) if len(parts) > 2 else parts[0]
            self.outcomes[group][report.outcome] += 1
            if report.outcome == "failed" and group not in self.failures:
                self.failures[group] = "\n".join(str(report.longrepr).strip().splitlines()[-12:])[-1500:]
                if self.explore:
                    print(f"\n--- {group}\n{self.failures[group]}", flush=True)


def write_markdown(results: dict) -> None:
    from bench_markdown import replace_section

    totals = results["totals"]
    lines = ["## Core ML interpreter: op conformance against coremltools' op tests", "",
             f"Command: `{results['command']}`" + (" (interrupted with Ctrl-C: the groups that ran)" if results.get("interrupted") else ""), "",
             f"ML program cases: {totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed, "
             f"{totals.get('skipped', 0)} skipped (skips are the tests' own, or neural-network models).", "",
             "| test file :: class | passed | failed | skipped |", "|---|---|---|---|"]
    for group, counts in results["groups"].items():
        name = group.split("ops/tests/")[-1]
        lines.append(f"| {name} | {counts.get('passed', 0)} | {counts.get('failed', 0)} | {counts.get('skipped', 0)} |")
    lines.append("")
    replace_section("coreml_conformance", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="*", default=None, help="test files under coremltools/converters/mil/mil/ops/tests")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite BENCHMARKS.md from the saved results")
    parser.add_argument("-k", dest="keyword", default=None, help="only tests matching this pytest -k expression")
    parser.add_argument("--explore", action="store_true", help="print each group's first failure; save nothing")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    if args.markdown_only:
        write_markdown(json.loads((RESULTS / "coreml_conformance.json").read_text()))
        return
    import coremltools

    tests = Path(coremltools.__file__).parent / "converters" / "mil" / "mil" / "ops" / "tests"
    files = [str(tests / f) for f in args.files] if args.files else [str(tests / v) for v in ("iOS14", "iOS15", "iOS16", "iOS17", "iOS18")]
    plugin = InterpreterPlugin(explore=args.explore)
    keyword = "not neuralnetwork" + (f" and ({args.keyword})" if args.keyword else "")
    exit_code = pytest.main([*files, "-q", "-p", "no:cacheprovider", "-p", "no:logging", "-k", keyword, "--rootdir", str(tests),
                 "-o", "addopts=", "--tb=short"], plugins=[plugin])
    summary = {group: dict(counts) for group, counts in sorted(plugin.outcomes.items())}
    totals = defaultdict(int)
    for counts in summary.values():
        for outcome, count in counts.items():
            totals[outcome] += count
    print(json.dumps(dict(totals)))
    if args.explore:  # failures were printed as they came; keep the saved results
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/coreml_conformance.py " + shlex.join(sys.argv[1:])
    interrupted = exit_code == pytest.ExitCode.INTERRUPTED  # Ctrl-C: what ran so far is still saved
    results = {"command": command, "interrupted": interrupted, "totals": dict(totals), "groups": summary,
               "first_failure": plugin.failures}
    (RESULTS / "coreml_conformance.json").write_text(json.dumps(results, indent=1))
    write_markdown(results)


if __name__ == "__main__":
    main()
