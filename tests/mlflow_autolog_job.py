"""A fresh process that runs Reflex under `mlflow.dspy.autolog(log_compiles=True)` (tests/test_mlflow_server.py).

    python tests/mlflow_autolog_job.py ORDER TRACKING_URI EXPERIMENT FAKE_BASE_URL RUN_DIR

ORDER is the import order that matters to autolog, which patches the `Teleprompter` subclasses
that exist when it is called:

- `lazy`: `import reflex_dspy` first, autolog, then `reflex_dspy.Reflex` (imported lazily, after);
- `eager`: `from reflex_dspy.reflex import Reflex` first, then autolog.

Prints one JSON line: the autolog run's id and our run's id.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(order: str, uri: str, experiment: str, base_url: str, run_dir: str) -> None:
    if order == "eager":
        from reflex_dspy.reflex import Reflex
    else:
        import reflex_dspy
    import mlflow
    import mlflow.dspy

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    mlflow.dspy.autolog(log_compiles=True, silent=True)
    if order == "lazy":
        Reflex = reflex_dspy.Reflex  # noqa: N806 - the lazy attribute, resolved after autolog

    from fakes import routing_examples

    from reflex_dspy.adapters import program_from_prompt
    from reflex_dspy.lm import resolve_lm

    task = resolve_lm("openai/fake-task", api_key="sk-autolog-job-secret-42", base_url=base_url)
    reasoner = resolve_lm("openai/fake-reasoner", api_key="sk-autolog-job-secret-42", base_url=base_url)
    optimizer = Reflex("exact", strategy="iterative", task_lm=task, reasoning_lm=reasoner, run_dir=run_dir,
                       max_iterations=1, max_workers=2)
    program = optimizer.compile(program_from_prompt("Say which team should handle the message."),
                                trainset=routing_examples(3))
    last = mlflow.last_active_run()
    print(json.dumps({"autolog_run": last.info.run_id if last else None, "reflex_run": program.run_id}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
