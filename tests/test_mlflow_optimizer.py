"""`ReflexPromptOptimizer` through MLflow's own `mlflow.genai.optimize_prompts`, on a SQLite store.

The predict_fn loads the registered prompt, formats it and answers like the fake routing model
(conftest.routing_respond: a prompt that lists every label gets bare labels); an MLflow scorer
compares with the expected label. The fake reasoning model proposes the labelled prompt.
"""

from __future__ import annotations

import pytest
from conftest import ScriptedReasoner, routing_respond, user_mlflow_state
from fakes import LABELS, fake_lm, routing_examples

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("mlflow.genai.optimize.optimizers")

from mlflow.genai.scorers import scorer  # noqa: E402

from reflex_dspy.mlflow import ReflexPromptOptimizer  # noqa: E402

TEMPLATE = "Say which team should handle this message: {{message}}"
LABELLED = f"Answer with one word ({', '.join(LABELS)}) for this message: {{{{message}}}}"


@pytest.fixture
def user_store(monkeypatch, tmp_path):
    yield from user_mlflow_state(monkeypatch, tmp_path, "prompt-optimization", "store.db")


@scorer
def exact(outputs, expectations) -> float:
    return float(outputs == expectations["expected_response"])


def test_optimize_prompts_runs_a_reflex_strategy_and_returns_the_selected_prompt(user_store, tmp_path):
    prompt = mlflow.genai.register_prompt("routing", TEMPLATE)

    def predict_fn(message: str) -> str:
        system = mlflow.genai.load_prompt(prompt.uri).format(message=message)
        return routing_respond(system, [{"role": "user", "content": message}])

    data = [{"inputs": {"message": e.input}, "outputs": e.output} for e in routing_examples(4)]
    reasoner = fake_lm(ScriptedReasoner([LABELLED]), name="fake/reasoner")
    optimizer = ReflexPromptOptimizer(reasoner, strategy="iterative", run_dir=tmp_path / "reflex", max_iterations=1)
    result = mlflow.genai.optimize_prompts(predict_fn=predict_fn, train_data=data, prompt_uris=[prompt.uri],
                                           optimizer=optimizer, scorers=[exact])
    (optimized,) = result.optimized_prompts
    assert optimized.name == "routing" and optimized.version == 2 and optimized.template == LABELLED
    assert result.initial_eval_score == optimizer.result.baseline.mean < result.final_eval_score == 1.0
    assert optimizer.result.selected_iteration == 1 and optimizer.result.held_out
    client = mlflow.MlflowClient(tracking_uri=user_store)
    ours = client.search_runs([client.get_experiment_by_name("prompt-optimization").experiment_id],
                              f"tags.`reflex.run_id` = '{optimizer.result.run_id}'")
    assert len(ours) == 1 and ours[0].data.tags.get("mlflow.parentRunId")  # nested under MLflow's own run


def test_an_mlflow_without_the_optimizer_api_gives_a_clear_import_error(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "mlflow.genai.optimize.optimizers", None)  # as if the API did not exist
    monkeypatch.delitem(sys.modules, "reflex_dspy.mlflow")
    with pytest.raises(ImportError, match=r"mlflow.genai.optimize_prompts, MLflow >= 3.5"):
        importlib.import_module("reflex_dspy.mlflow")
