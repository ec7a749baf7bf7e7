"""The README's main job, small: the real CLI on the embedded local model (no network, no -m)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reflex_dspy.candidate import Candidate

pytest.importorskip("xllamacpp")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_routing"


@pytest.mark.slow
def test_cli_optimizes_the_example_on_the_embedded_model(tmp_path):
    out, results = tmp_path / "best.md", tmp_path / "result.json"
    env = {**os.environ, "DSPY_CACHEDIR": str(tmp_path / "dspy-cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "reflex_dspy.cli", "optimize", str(EXAMPLE / "data.jsonl"), str(EXAMPLE / "prompt.md"),
         "--metric", "exact", "--max-iterations", "1", "--batch-size", "8", "-o", str(out),
         "--results-json", str(results)],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(results.read_text())

    # The written prompt is exactly the selected candidate.
    selected = result["selected_iteration"]
    initial = (EXAMPLE / "prompt.md").read_text().strip()
    expected = initial if selected == 0 else Candidate.from_dict(result["iterations"][selected - 1]["candidate"]).render()
    assert out.read_text().strip() == expected.strip() == result["best_prompt"].strip()

    # The summary's numbers are the ones in --results-json.
    summary = proc.stdout
    assert f"Baseline score : {result['baseline']['mean_score']:.4f}" in summary
    assert f"Final score    : {result['final']['mean_score']:.4f}" in summary
    assert re.search(rf"Train/val/test : {result['split_sizes']['train']} / {result['split_sizes']['val']} / "
                     rf"{result['split_sizes']['test']}", summary)
    assert result["significance"]["n"] >= 0 and "Significance   :" in summary
    # Real model calls were made and accounted for; one iteration ran and was recorded with its prompt.
    assert result["usage"]["lm_calls"] > 0 and result["usage"]["eval_tokens"] > 0
    # (result files write each iteration's prompt as text, aevyra-reflex's `system_prompt`)
    assert len(result["iterations"]) == 1 and result["iterations"][0]["system_prompt"].strip()
    # auto's opening step states the label set the data shows: it asks the task model only (the
    # README's first line stops there); the reasoning model's path runs in test_e2e_strategies.
    assert result["iterations"][0]["phase"] == "facts" and result["usage"]["reasoning_calls"] == 0
    assert "Answer with exactly one of these labels and nothing else:" in result["iterations"][0]["system_prompt"]
    # Progress went to stderr while it worked, and no DSPy/LiteLLM log line interleaved with it:
    # truncated answers are counted in the summary instead (issue 21).
    assert "Iter 1" in proc.stderr
    assert "LM response was truncated" not in proc.stderr and "WARNING" not in proc.stderr
    # The labels are short, so the embedded model's answers were capped (answer_budget.py).
    assert "answers are capped at" in " ".join(proc.stderr.split())  # rich wraps lines at 80 columns
