"""Prompt files as DSPy programs, sent as a plain system prompt (reflex_dspy.adapters)."""

from __future__ import annotations

import asyncio
import copy

import dspy
import pytest
from fakes import fake_lm

from reflex_dspy.adapters import PromptProgram, SystemPromptAdapter, load_prompt, program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.errors import UsageError

PROMPT = "Classify the sentiment of the sentence.\nAnswer with one word: positive or negative."


def echo(system: str, messages: list[dict]) -> str:
    """Reply with what the model saw, padded with whitespace the adapter must strip."""
    return f"  [{system}] {messages[-1]['content']}\n"


# -- the adapter on the wire ------------------------------------------------------------


def test_program_sends_exactly_system_prompt_and_input():
    lm = fake_lm(echo)
    program = program_from_prompt(PROMPT)
    with dspy.context(lm=lm):
        prediction = program(input="I loved it.")
    assert lm.fake_engine.requests == [(PROMPT, [{"role": "user", "content": "I loved it."}])]
    assert prediction.output == f"[{PROMPT}] I loved it."  # the raw completion, stripped, no parsing


def test_demos_become_user_assistant_turns_in_order():
    lm = fake_lm(lambda system, messages: "negative")
    program = program_from_prompt(PROMPT)
    program.predict.demos = [
        dspy.Example(input="Great film.", output="positive"),
        {"input": "Dull.", "output": "negative"},  # demos loaded from JSON are plain dicts
        dspy.Example(input="no answer here"),  # incomplete: has no plain-chat rendering
    ]
    with dspy.context(lm=lm):
        program(input="Awful.")
    system, messages = lm.fake_engine.requests[0]
    assert system == PROMPT
    assert messages == [
        {"role": "user", "content": "Great film."},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "Dull."},
        {"role": "assistant", "content": "negative"},
        {"role": "user", "content": "Awful."},
    ]


def test_adapter_works_through_plain_predict_and_leaves_no_field_markers():
    lm = fake_lm(lambda system, messages: "Paris")
    predict = dspy.Predict(dspy.Signature("question: str -> answer: str", "Answer the question."))
    with dspy.context(lm=lm, adapter=SystemPromptAdapter()):
        assert predict(question="Capital of France?").answer == "Paris"
    system, messages = lm.fake_engine.requests[0]
    assert system == "Answer the question."
    assert messages == [{"role": "user", "content": "Capital of France?"}]
    assert "[[" not in system + messages[0]["content"]


def test_format_returns_the_openai_messages():
    signature = dspy.Signature("input: str -> output: str", "Sys.")
    messages = SystemPromptAdapter().format(signature, [{"input": "a", "output": "b"}], {"input": "c"})
    assert messages == [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    record = SystemPromptAdapter().format_finetune_data(signature, [], {"input": "c"}, {"output": "d"})
    assert record == {
        "messages": [
            {"role": "system", "content": "Sys."},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }


def test_non_text_input_is_sent_as_json():
    lm = fake_lm(lambda system, messages: "ok")
    predict = dspy.Predict(dspy.Signature("data: dict -> output: str", "Summarise."))
    with dspy.context(lm=lm, adapter=SystemPromptAdapter()):
        predict(data={"k": "ü"})
    assert lm.fake_engine.requests[0][1] == [{"role": "user", "content": '{"k": "ü"}'}]


def test_empty_completion_is_an_answer_not_a_parse_failure():
    lm = fake_lm(lambda system, messages: "")
    with dspy.context(lm=lm):
        assert program_from_prompt(PROMPT)(input="x").output == ""


def test_parse_never_fails_on_marker_like_text():
    text = "[[ ## output ## ]]\n{not json"
    signature = dspy.Signature("input: str -> output: str")
    assert SystemPromptAdapter().parse(signature, f"  {text} \n") == {"output": text}


@pytest.mark.parametrize(
    ("signature", "needle"),
    [
        ("question, context -> answer", "exactly one input and one output field"),
        ("question -> answer, reason", "exactly one input and one output field"),
        ("question -> answer: int", "must be str"),
    ],
)
def test_unsupported_signatures_are_a_type_error_before_any_call(signature, needle):
    lm = fake_lm(lambda system, messages: "1")
    predict = dspy.Predict(signature)
    kwargs = {name: "x" for name in predict.signature.input_fields}
    with dspy.context(lm=lm, adapter=SystemPromptAdapter()), pytest.raises(TypeError, match=needle):
        predict(**kwargs)
    assert lm.fake_engine.requests == []


def test_usage_tracking_and_history_still_work():
    lm = fake_lm(lambda system, messages: "one two three")
    program = program_from_prompt("Be brief.")
    with dspy.context(lm=lm, track_usage=True):
        prediction = program(input="four five")
    usage = prediction.get_lm_usage()[lm.model]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] == 4  # "Be brief." + "four five", as the fake counts words
    assert lm.history[-1]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_forward_does_not_leak_the_adapter_into_global_settings():
    lm = fake_lm(lambda system, messages: "x")
    with dspy.context(lm=lm):
        program_from_prompt(PROMPT)(input="y")
        assert dspy.settings.adapter is None


def test_parallel_evaluation_uses_the_adapter_in_every_thread():
    lm = fake_lm(lambda system, messages: messages[-1]["content"].upper())
    program = program_from_prompt("Shout.")
    devset = [dspy.Example(input=f"word{i}", output=f"WORD{i}").with_inputs("input") for i in range(12)]
    evaluate = dspy.Evaluate(
        devset=devset, metric=lambda ex, pred, trace=None: ex.output == pred.output, num_threads=4
    )
    with dspy.context(lm=lm):
        result = evaluate(program)
    assert result.score == 100.0
    assert {system for system, _ in lm.fake_engine.requests} == {"Shout."}


def test_async_call_path_uses_the_same_format():
    lm = fake_lm(echo)
    engine = lm.fake_engine

    class AsyncFake:
        supports_response_schema = False

        async def complete(self, request):
            return engine.complete(request)

        def close(self):
            pass

    async_lm = dspy.LM("fake/async", engine=engine, async_engine=AsyncFake(), cache=False, num_retries=0)
    with dspy.context(lm=async_lm):
        prediction = asyncio.run(program_from_prompt(PROMPT).acall(input="hi"))
    assert prediction.output == f"[{PROMPT}] hi"
    assert engine.requests == [(PROMPT, [{"role": "user", "content": "hi"}])]


# -- the program as an optimizable DSPy module -------------------------------------------


def test_program_has_one_predictor_named_predict_with_the_prompt_as_instructions():
    program = program_from_prompt(PROMPT)
    [(name, predictor)] = program.named_predictors()
    assert name == "predict"
    assert predictor.signature.instructions == PROMPT
    assert list(predictor.signature.input_fields) == ["input"]
    assert list(predictor.signature.output_fields) == ["output"]
    assert program.prompt == PROMPT


def test_candidate_edits_change_what_the_lm_receives():
    lm = fake_lm(echo)
    program = program_from_prompt(PROMPT)
    edited = Candidate.from_program(program).with_instructions("predict", "X").apply(program)
    with dspy.context(lm=lm):
        edited(input="a")
        program(input="b")
    assert [system for system, _ in lm.fake_engine.requests] == ["X", PROMPT]  # the student is untouched


def test_candidate_demos_reach_the_lm():
    lm = fake_lm(lambda system, messages: "ok")
    program = program_from_prompt(PROMPT)
    candidate = Candidate.from_program(program).with_demos("predict", [{"input": "d-in", "output": "d-out"}])
    with dspy.context(lm=lm):
        candidate.apply(program)(input="q")
    assert lm.fake_engine.requests[0][1] == [
        {"role": "user", "content": "d-in"},
        {"role": "assistant", "content": "d-out"},
        {"role": "user", "content": "q"},
    ]
    assert Candidate.from_program(candidate.apply(program)) == candidate


def test_deepcopy_is_independent():
    program = program_from_prompt(PROMPT)
    clone = copy.deepcopy(program)
    clone.predict.signature = clone.predict.signature.with_instructions("changed")
    assert program.prompt == PROMPT
    assert clone.prompt == "changed"
    assert program.deepcopy().prompt == PROMPT


def test_save_and_load_round_trip(tmp_path):
    lm = fake_lm(echo)
    program = Candidate.from_program(program_from_prompt(PROMPT)).with_instructions(
        "predict", "Saved prompt."
    )
    program = program.with_demos("predict", [{"input": "a", "output": "b"}]).apply(
        program_from_prompt(PROMPT)
    )
    path = tmp_path / "program.json"
    program.save(str(path))

    restored = PromptProgram("placeholder")
    restored.load(str(path))
    assert restored.prompt == "Saved prompt."
    assert Candidate.from_program(restored) == Candidate.from_program(program)
    with dspy.context(lm=lm):
        restored(input="c")
    assert lm.fake_engine.requests[0] == (
        "Saved prompt.",
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    )


def test_empty_prompt_is_a_usage_error():
    with pytest.raises(UsageError, match="the prompt is empty"):
        program_from_prompt("  \n")


# -- prompt files --------------------------------------------------------------------------


def test_load_prompt_strips_surrounding_whitespace_and_bom(tmp_path):
    path = tmp_path / "prompt.md"
    path.write_bytes(("\ufeff\n" + PROMPT + "\n\n").encode("utf-8"))
    assert load_prompt(path) == PROMPT
    assert program_from_prompt(load_prompt(path)).prompt == PROMPT


def test_load_prompt_errors(tmp_path, monkeypatch):
    missing = tmp_path / "missing.md"
    with pytest.raises(UsageError) as info:
        load_prompt(missing)
    assert str(info.value) == f"{missing}: no such prompt file"

    empty = tmp_path / "empty.md"
    empty.write_text(" \n\t\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_prompt(empty)
    assert str(info.value) == f"{empty}: prompt file is empty"

    latin = tmp_path / "latin.md"
    latin.write_bytes(b"line one\ncaf\xe9\n")
    with pytest.raises(UsageError) as info:
        load_prompt(latin)
    assert str(info.value) == f"{latin}:2: prompt file is not UTF-8 text (byte 0xe9)"

    with pytest.raises(UsageError) as info:
        load_prompt(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a prompt file"

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(latin), "read_bytes", refuse)
    with pytest.raises(UsageError) as info:
        load_prompt(latin)
    assert str(info.value) == f"{latin}: cannot read prompt file (Permission denied)"
