"""The benchmarks still run (seconds): `bench/run.py --smoke` writes a report with every section."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_writes_every_section_and_its_plots(tmp_path):
    out = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for heading in ("Quality per budget", "Framework overhead per metric call", "Scaling: Evaluation", "Scaling: PDO", "No waste",
                    "Start-up"):
        assert f"## {heading}" in text
    assert "Interrupted at iteration 2 and resumed: 0 calls more" in text
    assert re.search(r"chat prompt three times\) took [\d.]+ ms after 0 ms, [\d.]+ ms after 5 ms of sleep", text)
    assert "| routing | 0.000 | +1.000 (16) | +1.000 (24) |" in text  # headline row: auto, then BFS-RS
    assert "| 1.00x vs BFS-RS | 1.00x |" in text  # the ratio, and the largest a perfect test score gives
    assert "| BootstrapFewShotWithRandomSearch | 0.000 | 1.000 |" in text
    run = json.loads((tmp_path / "quality-smoke" / "routing-auto-s0.json").read_text())
    assert run["phases"] == ["iterative"] and run["stop_reason"] == "score threshold 1.0 reached"
    assert run["auto_phases"] == [{"phase_number": 1, "axis": "iterative", "kind": "probe", "evidence": {}}]
    for plot in ("scaling-evaluation.svg", "quality-routing.svg", "quality-headline.svg"):
        assert (tmp_path / "benchmarks" / plot).read_text().startswith("<svg")
    bars = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="[\d.]+" fill="(#\w+)"/>',
                      (tmp_path / "benchmarks" / "quality-headline.svg").read_text())
    assert bars.count("#1f77b4") == bars.count("#d62728") == 2  # auto's and BFS-RS's bar, and their legend keys
    assert "quality-headline.svg" in text
