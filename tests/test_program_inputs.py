"""Examples that do not fit the program's inputs (and a `teacher=`, which nothing would use) are
refused in one line before any model call, with nothing written; programs whose inputs cannot be
read without running them are never refused."""

from __future__ import annotations

import dspy
import pytest
from conftest import routing_examples, routing_respond
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.errors import UsageError
from reflex_dspy.program_inputs import program_inputs


def chat_respond(system: str, messages: list[dict]) -> str:
    """The routing fake, answering in ChatAdapter's field markers (these programs are DSPy modules)."""
    return f"[[ ## output ## ]]\n{routing_respond(system, messages)}\n\n[[ ## completed ## ]]"


def compile_with(program, trainset, tmp_path, valset=None):
    """Compile on fake models; returns the task engine (to count its calls)."""
    task = fake_lm(chat_respond)
    opt = Reflex("exact", strategy="iterative", task_lm=task, reasoning_lm=fake_lm(lambda s, m: "Route it."),
                 max_iterations=1, run_dir=tmp_path / "runs")
    opt.compile(program, trainset=trainset, valset=valset)
    return task.fake_engine


def refused(program, trainset, tmp_path, valset=None, teacher=None) -> str:
    task = fake_lm(routing_respond)
    opt = Reflex("exact", task_lm=task, reasoning_lm=fake_lm(lambda s, m: "x"), run_dir=tmp_path / "runs")
    with pytest.raises(UsageError) as caught:
        opt.compile(program, trainset=trainset, valset=valset, teacher=teacher)
    assert task.fake_engine.calls == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_input_names_that_differ_from_the_signatures_are_refused(tmp_path):
    """DSPy itself would run them: it drops the unknown field with a warning and asks the model
    without the real one, so every answer would be paid for and score nothing."""
    message = refused(dspy.Predict("message -> output"), routing_examples(), tmp_path)
    assert message == ("trainset example 0: the program's input 'message' is missing; 'input' is not an "
                       "input of the program (it takes: message)")


def test_examples_without_marked_inputs_are_refused(tmp_path):
    examples = [dspy.Example(input=e.input, output=e.output) for e in routing_examples()]
    message = refused(dspy.Predict("input -> output"), examples, tmp_path)
    assert message.startswith("trainset example 0: no input fields marked: call .with_inputs(")
    assert "'input', 'output'" in message


def test_a_bad_valset_is_named_as_the_valset(tmp_path):
    val = [dspy.Example(text="Customer 1: my parcel", output="shipping").with_inputs("text")]
    message = refused(dspy.ChainOfThought("input -> output"), routing_examples(), tmp_path, valset=val)
    assert message.startswith("valset example 0: the program's input 'input' is missing; 'text' is not")


class Named(dspy.Module):
    def __init__(self):
        super().__init__()
        self.route = dspy.Predict("input -> output")

    def forward(self, input, hint=None):  # noqa: A002 - the dataset's field name
        return self.route(input=input if hint is None else f"{hint}: {input}")


class Renaming(dspy.Module):
    """forward(**kwargs) that renames its inputs: nothing can be known before it runs."""

    def __init__(self):
        super().__init__()
        self.route = dspy.Predict("text -> output")

    def forward(self, **kwargs):
        return self.route(text=kwargs["input"])


class Noting(Named):
    """Answers a `source` field besides the route's output."""

    def forward(self, input, hint=None):  # noqa: A002 - the dataset's field name
        return dspy.Prediction(output=super().forward(input, hint).output, source="mail")


def test_what_each_kind_of_program_takes():
    class Optional(dspy.Signature):
        input: str = dspy.InputField()
        context: str | None = dspy.InputField()
        tone: str = dspy.InputField(default="plain")
        output: str = dspy.OutputField()

    assert program_inputs(dspy.Predict(Optional)) == (("input",), ("input", "context", "tone"), False)
    assert program_inputs(dspy.ChainOfThought("input -> output")) == (("input",), ("input",), False)
    assert program_inputs(Named()) == (("input",), ("input", "hint"), False)
    assert program_inputs(Renaming()) is None

    def lookup(term: str) -> str:
        """Look a term up."""
        return term

    assert program_inputs(dspy.ReAct("question -> answer", tools=[lookup])) == (("question",), ("question",), False)

    class Open(dspy.Module):
        def forward(self, input, /, extra=None, **rest):  # noqa: A002
            return dspy.Prediction(output=input)

    assert program_inputs(Open()) == ((), ("extra",), True)


def test_programs_that_fit_or_cannot_be_read_run(tmp_path):
    examples = routing_examples()
    assert compile_with(Named(), examples, tmp_path / "named").calls > 0
    assert compile_with(Renaming(), examples, tmp_path / "renaming").calls > 0


def test_an_input_a_custom_forward_does_not_take_is_refused(tmp_path):
    examples = [e.copy(source="mail").with_inputs("input", "source") for e in routing_examples()]
    assert refused(Named(), examples, tmp_path) == (
        "trainset example 0: 'source' is not an input of the program (it takes: input, hint)")


def test_records_that_are_not_examples_are_refused(tmp_path):
    records = [{"input": e.input, "output": e.output} for e in routing_examples()]
    assert refused(dspy.Predict("input -> output"), records, tmp_path) == (
        "trainset example 0 is a dict, not a dspy.Example: make it dspy.Example(**record).with_inputs('input')")
    assert refused(dspy.Predict("input -> output"), ["a message"] * 12, tmp_path) == (
        "trainset example 0 is a str, not a dspy.Example")  # before: AttributeError 'str' object has no attribute 'keys'


def test_examples_a_built_in_metric_cannot_compare_are_refused(tmp_path):
    """Before: the baseline paid for every answer, then stopped ("every test example failed:
    example has no gold label fields"), or with a field the program never answers every example
    failed on every run ("prediction has no field 'source'")."""
    bare = [dspy.Example(input=e.input).with_inputs("input") for e in routing_examples()]
    assert refused(dspy.Predict("input -> output"), bare, tmp_path) == (
        "trainset example 0 has no field besides its inputs for metric 'exact' to compare the program's answer with")
    noted = [e.copy(source="mail") for e in routing_examples()]
    assert refused(dspy.ChainOfThought("input -> output"), noted, tmp_path) == (
        "trainset example 0: 'source' is not a field the program answers (it answers: reasoning, output), yet "
        "metric 'exact' would compare it: leave it out of the examples, or pass a metric that reads only the "
        "fields you mean")
    # A custom forward's answer fields are not known before it runs (this one answers `source` too).
    assert compile_with(Noting(), [e.copy(source="mail") for e in routing_examples()], tmp_path / "custom").calls > 0



def test_a_teacher_is_refused_not_ignored(tmp_path):
    """DSPy's GEPA refuses `teacher=` too; before, it was accepted and silently unused."""
    message = refused(dspy.Predict("input -> output"), routing_examples(), tmp_path,
                      teacher=dspy.Predict("input -> output"))
    assert message.startswith("teacher= is not supported")
