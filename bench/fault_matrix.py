"""The fault matrix of the README's "Rate limits, retries and timeouts" bullet (issue 17).

Runs the real CLI (`python -m reflex_dspy.cli optimize`, one subprocess per row) against
`tests/fake_openai_server.py` injecting one fault per row, and prints a Markdown table: requests the
server received, faults it injected, retries and 429s the run reported, failed examples, wall time.

    python bench/fault_matrix.py          # ten rows, a few minutes
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai_server import FakeOpenAI, Faults  # noqa: E402
from fakes import routing_examples  # noqa: E402

ROWS: list[tuple[str, Faults | None, list[str]]] = [
    ("none", None, []),
    ("429, 20%", Faults("429", 0.2), []),
    ("500, 20% (Retry-After: 0)", Faults("500", 0.2), []),
    ("500, 20% (no Retry-After: backoff)", Faults("500", 0.2, retry_after=None), []),
    ("hang 8 s, 20%, --sample-timeout 1", Faults("hang", 0.2, hang_s=8), ["--sample-timeout", "1"]),
    ("malformed JSON, 20%", Faults("malformed", 0.2), []),
    ("empty content, 20%", Faults("empty", 0.2), []),
    ("500 sticky by input, 30%", Faults("500", 0.3, sticky=True), []),
    ("empty sticky by input, 30%", Faults("empty", 0.3, sticky=True), []),
    ("reasoning model 500, 100%", Faults("500", 1.0, target="reasoning"), []),
]


def run(faults: Faults | None, extra: list[str]) -> dict[str, Any]:
    """One CLI run of the routing task (12 examples, iterative, 1 iteration) against a fresh server."""
    folder = Path(tempfile.mkdtemp(prefix="reflex-faults-"))
    data, prompt, results = folder / "data.jsonl", folder / "prompt.md", folder / "result.json"
    data.write_text("".join(json.dumps({"input": e.input, "output": e.output}) + "\n" for e in routing_examples(4)))
    prompt.write_text("Say which team should handle the message.\n")
    with FakeOpenAI(faults=faults, lifetime_s=900) as server:
        env = {**os.environ, "OPENAI_API_BASE": server.base_url, "OPENAI_API_KEY": "test-key",
               "DSPY_CACHEDIR": str(folder / "cache"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "reflex_dspy.cli", "optimize", str(data), str(prompt), "-m", "openai/fake-task",
             "--reasoning-model", "openai/fake-reasoner", "--metric", "exact", "-s", "iterative",
             "--max-iterations", "1", "--run-dir", str(folder / "runs"), "--results-json", str(results), *extra],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False,
        )
        wall = time.monotonic() - start
    usage = json.loads(results.read_text())["usage"] if results.exists() else {}
    return {"exit": done.returncode, "requests": server.received, "injected": server.faults_injected,
            "retries": usage.get("retries", "-"), "rate_limits": usage.get("rate_limits", "-"),
            "failed": usage.get("failed", "-"), "wall": wall,
            "error": done.stderr.strip().splitlines()[-1] if done.returncode and done.stderr.strip() else ""}


def main() -> None:
    print("| fault | exit | requests | faults injected | retries reported | 429s reported | failed examples "
          "| wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, faults, extra in ROWS:
        m = run(faults, extra)
        print(f"| {name} | {m['exit']} | {m['requests']} | {m['injected']} | {m['retries']} | {m['rate_limits']} "
              f"| {m['failed']} | {m['wall']:.1f} |", flush=True)
        if m["error"]:
            print(f"<!-- {name}: {m['error'][:300]} -->", flush=True)


if __name__ == "__main__":
    main()
