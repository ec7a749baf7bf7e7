"""Pipeline mode in Python: marked predictors, the captured execution trace, the judge and the record.

The pipeline is a small shop agent: `extract` (a predictor, context) names the item asked
about, `lookup` (a `dspy.Tool`) returns its price from a table, `answer` (a predictor, the one
optimized) writes the reply. The fake task model answers by the instructions it receives: with
instructions that mention the tool result, `answer` quotes the price the tool returned; with the
weak starting instructions it guesses for half the items (so the guess is wrong). Helpers here
are shared by test_pipeline_strategies.py and test_pipeline_cli.py.
"""

from __future__ import annotations

import json
import re

import dspy
import pytest
from fakes import fake_lm

import reflex_dspy
from reflex_dspy import AgentTrace, Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.errors import UsageError
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.marking import select_predictors
from reflex_dspy.metrics import JudgeMetric
from reflex_dspy.proposals import format_failures
from reflex_dspy.tracking.store import RunStore

PRICES = {
    "anvil": 41,
    "bucket": 7,
    "candle": 3,
    "drill": 89,
    "easel": 35,
    "fiddle": 120,
    "globe": 27,
    "hammock": 64,
    "inkpot": 12,
    "jigsaw": 18,
    "kettle": 22,
    "lantern": 15,
    "mallet": 19,
    "nozzle": 4,
    "oar": 38,
    "pliers": 11,
}
EXTRACT = "Name the item the question asks about, in lowercase."
WEAK = "Reply to the customer."
GOOD = "Reply with the price exactly as the tool result states it."


def lookup(item: str) -> str:
    """The price of an item in the shop's table."""
    return f"{PRICES[item]} dollars" if item in PRICES else "unknown item"


def question(item: str) -> str:
    return f"How much does the {item} cost?"


def shop_examples() -> list[dspy.Example]:
    return [
        dspy.Example(question=question(i), answer=f"{p} dollars").with_inputs("question")
        for i, p in PRICES.items()
    ]


class ShopAgent(dspy.Module):
    """extract (context) → lookup tool → answer; `mark` decides how the answer step is marked."""

    def __init__(self, mark: bool | None = True, use_tool: bool = True) -> None:
        super().__init__()
        self.extract = dspy.Predict(dspy.Signature("question -> item", EXTRACT))
        self.lookup = dspy.Tool(lookup)
        self.answer = dspy.Predict(dspy.Signature("question, tool_result -> answer", WEAK))
        self.use_tool = use_tool
        if mark is not None:
            reflex_dspy.optimize(self.answer, mark)

    def forward(self, question: str) -> dspy.Prediction:
        item = self.extract(question=question).item
        result = self.lookup(item=item) if self.use_tool else "(not looked up)"
        return self.answer(question=question, tool_result=result)


def _field(text: str, name: str) -> str:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n|$)", text, re.S)
    return match.group(1).strip() if match else ""


def shop_respond(system: str, messages: list[dict]) -> str:
    """The fake task model, answering in ChatAdapter's field-marker format."""
    user = messages[-1]["content"]
    if "`item`" in system:
        item = _field(user, "question").removeprefix("How much does the ").removesuffix(" cost?")
        return f"[[ ## item ## ]]\n{item}\n\n[[ ## completed ## ]]"
    result = _field(user, "tool_result")
    shown_demo = any("tool_result" in m["content"] for m in messages[:-1] if m["role"] == "user")
    item = _field(user, "question").split()[4]
    if "tool result" in system.lower() or shown_demo or item < "f":
        answer = result  # quotes the tool's result
    else:
        answer = "about 10 dollars, I think"  # ignores the tool
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def rewrite_everything(system: str, messages: list[dict]) -> str:
    """A reasoning model that rewrites whatever step it is shown into GOOD (never touching EXTRACT itself)."""
    return json.dumps(
        {
            "failure_patterns": "the answer ignores the tool",
            "change_summary": "quote the tool result",
            "revised_instructions": GOOD,
        }
    )


def compile_shop(
    program: dspy.Module, tmp_path, *, strategy: str = "iterative", reasoner=rewrite_everything, **kwargs
) -> dspy.Module:
    kwargs.setdefault("max_iterations", 2)
    kwargs.setdefault("early_stopping_patience", 0)
    kwargs.setdefault("score_threshold", 1.0)
    kwargs.setdefault("max_workers", 2)
    kwargs.setdefault("train_ratio", 0.6)
    kwargs.setdefault("val_ratio", 0.4)
    opt = Reflex(
        "exact",
        strategy=strategy,
        task_lm=fake_lm(shop_respond),
        reasoning_lm=fake_lm(reasoner),
        run_dir=tmp_path,
        mlflow=False,
        **kwargs,
    )
    return opt.compile(program, trainset=shop_examples())


def predictor_states(program: dspy.Module) -> dict[str, tuple[str, list]]:
    return {n: (p.signature.instructions, [dict(d) for d in p.demos]) for n, p in program.named_predictors()}


# --------------------------------------------------------------------------- marking


def test_selection_rule_explicit_names_then_marks_then_all():
    assert select_predictors(ShopAgent(mark=True)) == ["answer"]
    assert select_predictors(ShopAgent(mark=None)) == ["extract", "answer"]
    assert select_predictors(ShopAgent(mark=False)) == ["extract"]  # marked as context: everything else
    assert select_predictors(ShopAgent(mark=True), ["extract"]) == ["extract"]  # explicit names win
    with pytest.raises(
        UsageError, match=r"no predictor named 'answr' in the program \(it has: extract, answer\)"
    ):
        select_predictors(ShopAgent(), ["answr"])
    with pytest.raises(UsageError, match="selects no predictor"):
        select_predictors(ShopAgent(), [])


def test_the_mark_survives_deepcopy_and_candidate_apply():
    program = ShopAgent(mark=True)
    candidate = Candidate.from_program(program, select_predictors(program)).with_instructions("answer", GOOD)
    for copy in (program.deepcopy(), candidate.apply(program)):
        assert select_predictors(copy) == ["answer"]
    assert reflex_dspy.optimize(program.answer) is program.answer  # returns what it marks


def test_unknown_optimize_name_is_a_one_line_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no predictor named 'reply'.*extract, answer"):
        compile_shop(ShopAgent(mark=None), tmp_path, optimize=["reply"])


@pytest.mark.parametrize("how", ["optimize=['answer']", "reflex_dspy.optimize(self.answer)"])
def test_unmarked_predictors_never_change(how, tmp_path):
    program = ShopAgent(mark=None) if how.startswith("optimize=") else ShopAgent(mark=True)
    kwargs = {"optimize": ["answer"]} if how.startswith("optimize=") else {}
    before = predictor_states(program)
    optimized = compile_shop(program, tmp_path, **kwargs)
    result = optimized.result
    assert result.final.mean == 1.0 and result.baseline.mean < 1.0  # the answer step did improve
    assert predictor_states(program) == before  # the student is untouched
    assert predictor_states(optimized)["extract"] == before["extract"]
    assert predictor_states(optimized)["answer"][0] == GOOD
    run = RunStore(tmp_path).get_run(result.run_id)
    for record in run.load_iterations():
        assert set(record.candidate["predictors"]) == {"answer"}  # only the optimized node is recorded
        assert record.details["changed_predictors"] in ([], ["answer"])
    assert any(
        r.details["changed_predictors"] == ["answer"] and r.predictor == "answer" for r in result.iterations
    )
    for entry in optimized.candidate_programs:
        assert predictor_states(entry["program"])["extract"] == before["extract"]


# --------------------------------------------------------------------------- the captured trace


def _evaluate(program: dspy.Module, metric=lambda ex, pred, trace=None: 1.0, examples=None):
    evaluator = Evaluator(program, metric, task_lm=fake_lm(shop_respond), max_workers=2)
    candidate = Candidate.from_program(program, select_predictors(program))
    return evaluator, evaluator.evaluate(candidate, examples or shop_examples()[:3])


def test_evaluator_records_predictor_and_tool_steps_in_order_with_flags():
    evaluator, result = _evaluate(ShopAgent())
    first = next(iter(result.results.values()))
    trace = AgentTrace.from_dict(first.agent_trace)
    assert [(n.name, n.kind, n.optimize) for n in trace.nodes] == [
        ("extract", "predictor", False),
        ("lookup", "tool", False),
        ("answer", "predictor", True),
    ]
    assert trace.nodes[1].inputs == {"item": "anvil"} and trace.nodes[1].outputs == {"result": "41 dollars"}
    assert trace.final_answer == "41 dollars" and trace.input_id == first.example_id
    json.dumps(first.to_dict())  # the journal stores it as JSON


def test_a_failing_tool_is_recorded_with_its_error():
    def broken(item: str) -> str:
        """Always fails."""
        raise RuntimeError("table offline")

    program = ShopAgent()
    program.lookup = dspy.Tool(broken, name="lookup")
    _, result = _evaluate(program)
    failed = next(iter(result.results.values()))
    assert failed.failed and "table offline" in failed.error  # the example fails, it is not scored 0


class _Judge:
    """A fake judge LM: grades 1 when the rubric asks for tool use and the trace shows no tool call.

    It records every prompt, so tests can assert what the judge was shown.
    """

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, system: str, messages: list[dict]) -> str:
        text = system + "\n" + "\n".join(m["content"] for m in messages)
        self.prompts.append(text)
        bypassed = "(tool)" not in text
        score = 1 if "penalise" in text and bypassed else 5
        return json.dumps(
            {"reasoning": "no tool was called" if score == 1 else "used the tool", "score": score}
        )


def test_the_judge_sees_the_whole_trace_and_can_penalise_a_tool_bypass():
    judge = _Judge()
    metric = JudgeMetric(fake_lm(judge), "Grade 1-5. penalise an answer that did not call the lookup tool.")
    example = shop_examples()[:1]  # anvil: the weak prompt quotes its tool result, so the answer is right
    _, with_tool = _evaluate(ShopAgent(use_tool=True), metric, example)
    prompt = judge.prompts[-1]
    assert "[1] extract (predictor) [context]" in prompt and "[3] answer (predictor) [optimize]" in prompt
    assert "[2] lookup (tool) [context]" in prompt and "result: <data>41 dollars</data>" in prompt
    assert "item: <data>anvil</data>" in prompt  # the tool's arguments
    _, bypassed = _evaluate(ShopAgent(use_tool=False), metric, example)
    assert "(tool)" not in judge.prompts[-1]
    scored = next(iter(with_tool.results.values())).score, next(iter(bypassed.results.values())).score
    assert scored == (1.0, 0.0)


def test_a_single_step_program_is_judged_without_a_trace():
    judge = _Judge()
    metric = JudgeMetric(fake_lm(judge), "Grade 1-5.")
    program = program_from_prompt("Say the price.")
    evaluator = Evaluator(program, metric, task_lm=fake_lm(lambda s, m: "41 dollars"))
    evaluator.evaluate(
        Candidate.from_program(program), [dspy.Example(input="anvil?", output="41").with_inputs("input")]
    )
    assert "<trace" not in judge.prompts[-1]


def test_the_reasoning_model_sees_the_trace_of_each_failure_bounded():
    _, result = _evaluate(
        ShopAgent(), lambda ex, pred, trace=None: float(pred.answer == ex.answer), shop_examples()
    )
    failures = result.worst(10)
    text = format_failures(failures, {ex.reflex_id: ex for ex in _ids(shop_examples())})
    assert "[2] lookup (tool) [context]" in text and "[3] answer (predictor) [optimize]" in text
    assert "about 10 dollars" in text  # the failing node's output
    assert text.count("<trace") <= 10 and len(text) < 12_000
    assert "<data>" not in text.split("<data>", 1)[1]  # values inside the one data block are not re-wrapped


def _ids(examples):
    from reflex_dspy.data import assign_ids

    return assign_ids(examples)


def test_control_the_same_reasoner_does_rewrite_the_context_step_once_it_is_selected(tmp_path):
    """What the tests above rule out really happens when `extract` is the optimized step."""
    result = compile_shop(ShopAgent(mark=True), tmp_path, optimize=["extract"]).result
    rewritten = [
        r for r in result.iterations if r.candidate["predictors"]["extract"]["instructions"] != EXTRACT
    ]
    assert rewritten and rewritten[0].details["changed_predictors"] == ["extract"]
