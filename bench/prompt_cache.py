"""The embedded model with llama.cpp's prompt cache on and off: does an answer depend on the
request before it, and what does computing every prompt afresh cost?

On the bench's routing task (seed 0's split), three programs: the bare one, the bare one plus
the label sentence auto's opening step adds, and the bare one with 4 train demos. Each setting
(`REFLEX_DSPY_PROMPT_CACHE` unset, then 0) scores the label-sentence program on val + 8 test
examples twice: in a row, and each example right after the bare and the demo program asked the
same example (so the cached prefix differs). Reported: the answers that changed between the two
orders, and the wall time of the 4 x 16 calls. DSPy's response cache is off; run it alone on the
machine (one embedded-model job at a time): `python bench/prompt_cache.py`.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dspy  # noqa: E402
import quality  # noqa: E402
import quality_tasks  # noqa: E402

from reflex_dspy.llama_engine import PROMPT_CACHE_ENV  # noqa: E402
from reflex_dspy.lm import embedded_lm  # noqa: E402


def programs(task: quality_tasks.Task, train: list[dspy.Example]) -> tuple[dspy.Module, ...]:
    labels = [label for label, _ in Counter(ex[task.output] for ex in train).most_common()]  # as auto lists them
    sentence = f"Answer with exactly one of these labels and nothing else: {', '.join(labels)}."
    bare, labelled, demos = task.program(), task.program(), task.program()
    labelled.signature = labelled.signature.with_instructions(f"{bare.signature.instructions}\n\n{sentence}")
    demos.demos = list(train[:4])
    return bare, labelled, demos


def measure(setting: str) -> dict[str, object]:
    os.environ[PROMPT_CACHE_ENV] = setting
    task = quality_tasks.TASKS["routing"]
    train, val, test = quality_tasks.split(task.load(), 0)
    bare, labelled, demos = programs(task, train)
    examples = val + test[:8]
    with dspy.context(lm=embedded_lm(max_tokens=64, cache=False), adapter=dspy.JSONAdapter()):
        start = time.perf_counter()
        in_a_row = quality.evaluate(task, labelled, examples)["scores"]
        after_others = []
        for ex in examples:
            quality.evaluate(task, bare, [ex])
            quality.evaluate(task, demos, [ex])
            after_others.append(quality.evaluate(task, labelled, [ex])["scores"][0])
        wall = time.perf_counter() - start
    changed = sum(a != b for a, b in zip(in_a_row, after_others, strict=True))
    return {"setting": setting, "changed": changed, "n": len(examples), "calls": 4 * len(examples), "wall_s": wall,
            "in_a_row": sum(in_a_row), "after_others": sum(after_others)}


def main() -> int:
    rows = [measure("1"), measure("0")]
    print("| REFLEX_DSPY_PROMPT_CACHE | answers that changed with the requests before | right in a row / after others | wall for the calls |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['changed']} of {r['n']} | {r['in_a_row']:.0f} / {r['after_others']:.0f} "
              f"| {r['wall_s']:.1f} s ({r['calls']} calls) |")
    print(f"\ncomputing every prompt afresh took {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
