"""The embedded engine (llama.cpp through the prebuilt `xllamacpp` wheel) on the real Qwen model.

    flock /tmp/reflex-embedded.lock .venv/bin/python bench/embedded_engine.py [--repeats 3]

Measures what a user waits for: loading the model, decoding speed of one request, throughput of
concurrent requests with 1, 2 and 4 parallel slots (the engine's `n_parallel`), and whether a
JSON schema in `response_format` really constrains the reply. Writes
bench/results/embedded_engine.json; `section()` turns that file into the docs/benchmarks.md
section (bench/report.py calls it), so the figures there are always those of the last run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "embedded_engine.json"

# Concurrent requests shaped like an evaluation: a short instruction, one review, a free answer.
REVIEWS = [
    "The battery died after two days, very disappointed.", "Absolutely love this blender, works great!",
    "It's okay, nothing special but does the job.", "Shipping took forever and the box was damaged.",
    "Best purchase of the year, highly recommend.", "The color is different from the picture.",
    "Customer service was helpful and quick.", "Stopped working after a week.",
]
SYSTEM = "Read the product review and tell us how the customer feels about their purchase."
SCHEMA = {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
          "required": ["sentiment"], "additionalProperties": False}

_LOAD = """
import time, sys
from reflex_dspy import llama_engine as eng
from reflex_dspy.model_files import embedded_model_path
engine = eng.LlamaCppEngine(embedded_model_path(), n_parallel=int(sys.argv[1]))
start = time.perf_counter()
print(engine.load().load_seconds, time.perf_counter() - start)
"""


def load_seconds(repeats: int) -> float:
    """Median time to load the model in a fresh process (the file already assembled and in the page cache)."""
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _LOAD, "1"], capture_output=True, text=True, check=True, cwd=ROOT)
        times.append(float(out.stdout.split()[0]))
    return statistics.median(times)


def _engine(slots: int) -> Any:
    from reflex_dspy import llama_engine as eng
    from reflex_dspy.model_files import embedded_model_path

    eng._close_models()  # one model at a time: each slot count is a fresh load
    engine = eng.LlamaCppEngine(embedded_model_path(), n_parallel=slots)
    engine.load()
    return engine


def _ask(engine: Any, review: str, max_tokens: int, schema: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": review}],
                               "max_tokens": max_tokens, "temperature": 0.0, "seed": 1234}
    if schema:
        payload["response_format"] = {"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMA}}
    return engine.load().server.handle_chat_completions(payload)


def throughput(slots: int, workers: int, max_tokens: int) -> dict[str, float]:
    """Generated tokens per second over all REVIEWS, `workers` requests in flight at once."""
    engine = _engine(slots)
    _ask(engine, "warm-up", 4)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        replies = list(pool.map(lambda r: _ask(engine, r, max_tokens), REVIEWS))
    wall = time.perf_counter() - start
    tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    return {"slots": slots, "workers": workers, "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall}


def schema_check() -> dict[str, Any]:
    """Every review answered under the JSON schema: does each reply parse and obey the enum?"""
    engine = _engine(1)
    valid = 0
    for review in REVIEWS:
        text = _ask(engine, review, 32, schema=True)["choices"][0]["message"]["content"]
        with contextlib.suppress(ValueError, KeyError, TypeError):
            valid += json.loads(text)["sentiment"] in ("negative", "positive")
    return {"replies": len(REVIEWS), "valid": valid}


def install_seconds() -> float:
    """`pip install xllamacpp` into a fresh venv with no pip cache: what a new user's machine pays."""
    import tempfile

    version = __import__("xllamacpp").__version__
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        start = time.perf_counter()
        subprocess.run([str(Path(tmp) / "bin" / "pip"), "install", "-q", f"xllamacpp=={version}"], check=True,
                       env={**os.environ, "PIP_NO_CACHE_DIR": "1"}, capture_output=True)
        return time.perf_counter() - start


def measure(repeats: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    single = [throughput(1, 1, 128) for _ in range(repeats)]
    by_slots: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for _ in range(repeats):  # interleaved, so a busy spell on a shared machine hits every setting
        for slots in by_slots:
            by_slots[slots].append(throughput(slots, 4, 64)["tokens_per_s"])
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
        "xllamacpp": __import__("xllamacpp").__version__,
        "repeats": repeats,
        "load_s": load_seconds(repeats),
        "single_tokens_per_s": statistics.median(r["tokens_per_s"] for r in single),
        "concurrent_tokens_per_s": {str(k): statistics.median(v) for k, v in by_slots.items()},
        "concurrent_spread": {str(k): [min(v), max(v)] for k, v in by_slots.items()},
        "schema": schema_check(),
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # other jobs on the machine
    }


def section() -> list[str]:
    """The docs/benchmarks.md section, from the last run's results (none if it never ran)."""
    if not RESULTS.is_file():
        return []
    m = json.loads(RESULTS.read_text())
    one = m["concurrent_tokens_per_s"]["1"]
    best_slots, best = max(m["concurrent_tokens_per_s"].items(), key=lambda kv: kv[1])
    best_ratio = best / one
    rows = [f"| {k} | {v:.1f} tokens/s | {v / one:.2f}x | {m['concurrent_spread'][k][0]:.1f}–"
            f"{m['concurrent_spread'][k][1]:.1f} |" for k, v in m["concurrent_tokens_per_s"].items()]
    cpus = int(m["machine"].split(", ")[1].split()[0])
    load = m.get("load_avg")
    busy = bool(load) and max(load) > cpus + 1  # more runnable jobs than this benchmark's own threads
    return [
        "## Embedded engine",
        "",
        f"Measured by `bench/embedded_engine.py` on {m['date']} ({m['machine']}; median of {m['repeats']} runs): "
        f"xllamacpp {m['xllamacpp']} running the embedded Qwen2.5-Coder-0.5B-Instruct Q4_K_M on every CPU. "
        + (f"The 1-minute load average was {load[0]:.1f} at the start and {load[1]:.1f} at the end"
           + (": other jobs took part of the CPU, so absolute speeds below are low and noisy." if busy else
              " (the benchmark's own threads: nothing else ran).") if load else ""),
        "",
        "Before it, the engine was llama-cpp-python 0.3.36, built from source at install time. Issue 21 measured "
        "it on the same kind of 2-core machine: 5 min 45 s to install (nearly all of it compiling llama.cpp), "
        "41 tokens/s on the same model and prompt, a JSON schema honoured through its grammar, and one request "
        "at a time (one lock around the model).",
        "",
        "- Install (`pip install xllamacpp`, empty pip cache, a 34 MB wheel, no compiler): "
        + (f"{m['install_s']:.1f} s (measured {m.get('install_date') or m['date']})." if m.get("install_s")
           else "not measured (`--install`)."),
        f"- Load (fresh process, file in the page cache): {m['load_s']:.2f} s.",
        f"- One request at a time: {m['single_tokens_per_s']:.1f} generated tokens/s (greedy, 128-token answers).",
        f"- JSON schema in `response_format`: {m['schema']['valid']} of {m['schema']['replies']} replies parsed "
        "and obeyed the schema's enum (the schema becomes a llama.cpp grammar).",
        "- Eight requests, four in flight at once (as an evaluation with `max_workers=4` sends them), by the "
        "engine's parallel slots (`n_parallel`):",
        "",
        "| slots | throughput | vs 1 slot | range over runs |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Reading: the best slot setting gave {best_ratio:.2f}x the throughput of one slot ({best_slots} slots) on "
        f"{cpus} CPUs. Every slot's request shares one decoding step, but on this few cores the step itself is "
        "bound by arithmetic, so slots add little here. The engine opens one slot per 2 CPUs (at most 4), so a "
        "2-core machine keeps one slot and reproducible greedy answers (`REFLEX_DSPY_SLOTS=2` opts in). With more "
        "cores, expect each step to get faster with the threads and the slots to multiply the tokens per step: "
        "on 8 cores, 4 slots serve the default `--max-workers 4` at once. "
        "That is expected, not measured: this machine has 2 CPUs.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--install", action="store_true", help="also time `pip install xllamacpp` (network)")
    args = parser.parse_args(argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    results = measure(args.repeats)
    if args.install:
        results["install_s"], results["install_date"] = install_seconds(), results["date"]
    elif RESULTS.is_file():  # keep the last measured install time, and when it was measured
        last = json.loads(RESULTS.read_text())
        results["install_s"] = last.get("install_s")
        results["install_date"] = last.get("install_date", "an earlier run") if last.get("install_s") else None
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(section()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
