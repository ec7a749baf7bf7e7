"""Do the examples fit the program's inputs, and the metric's comparison? Checked before any model call.

DSPy calls a program as `program(**example.inputs())`. An example with no inputs marked fails
only when it is first run, and one whose input names differ from the program's (`input` where
the signature says `message`) is run anyway: DSPy logs a warning, drops the unknown field and
asks the model with the real one missing, so every answer is paid for and scored on nothing.
Likewise a built-in metric compares every non-input field of an example with the prediction's
field of that name: an example with none, or with one the program never answers (a `source`
note), fails on every run, each answer paid for. A user would rather hear it at once, in one
line, naming the example and the field.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import NamedTuple

import dspy
from dspy.adapters.utils import annotation_allows_none
from pydantic_core import PydanticUndefined

from reflex_dspy.errors import UsageError
from reflex_dspy.metrics import RESERVED_ID_FIELD, compares_labels, metric_label

__all__ = ["ProgramInputs", "check_inputs", "check_labels", "program_inputs", "program_outputs"]


class ProgramInputs(NamedTuple):
    """The input names a program takes, in declaration order."""

    required: tuple[str, ...]
    accepted: tuple[str, ...]  # every named input, the required ones included
    open_ended: bool = False  # `forward(x, **kwargs)`: any other name is taken too


def _signature_inputs(signature: type[dspy.Signature]) -> ProgramInputs:
    """By DSPy's own rule: a field with a default or that allows None may be left out."""
    fields = signature.input_fields
    required = tuple(name for name, info in fields.items()
                     if info.default is PydanticUndefined and not annotation_allows_none(info.annotation))
    return ProgramInputs(required, tuple(fields))


def program_inputs(program: dspy.Module) -> ProgramInputs | None:
    """The inputs `program` takes as `program(**inputs)`.

    None when they cannot be known without running it (a `forward(**kwargs)` that is neither a
    DSPy predictor nor a module that keeps its signature), so a program we cannot read is never refused.
    """
    if isinstance(program, dspy.Predict):
        return _signature_inputs(program.signature)
    if isinstance(program, dspy.ChainOfThought):
        return _signature_inputs(program.predict.signature)
    # The class's function, not `program.forward`: DSPy warns when a module's forward is fetched.
    # Positional-only and *args cannot come from `**example.inputs()`.
    try:
        declared = list(inspect.signature(type(program).forward).parameters.values())[1:]
    except (TypeError, ValueError, AttributeError):  # no forward, or one inspect cannot read
        return None
    params = [p for p in declared
              if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY)]
    named = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if named:
        required = tuple(p.name for p in named if p.default is inspect.Parameter.empty)
        return ProgramInputs(required, tuple(p.name for p in named), open_ended=len(named) < len(params))
    signature = getattr(program, "signature", None)  # ReAct, ProgramOfThought and the like keep theirs
    if isinstance(signature, type) and issubclass(signature, dspy.Signature):
        return _signature_inputs(signature)
    return None


def program_outputs(program: dspy.Module) -> tuple[str, ...] | None:
    """The fields `program`'s prediction answers: a predictor's or a kept signature's outputs;
    None when only running a custom `forward` would tell."""
    if isinstance(program, dspy.ChainOfThought):
        return tuple(program.predict.signature.output_fields)
    signature = getattr(program, "signature", None)  # Predict, ReAct, ProgramOfThought and the like
    if isinstance(signature, type) and issubclass(signature, dspy.Signature):
        return tuple(signature.output_fields)
    return None


def check_inputs(program: dspy.Module, examples: Sequence[dspy.Example], where: str) -> None:
    """Raise a one-line `UsageError` naming the first of `examples` (in `where`, e.g. "trainset")
    that is not a `dspy.Example`, has no inputs marked or whose inputs do not fit `program`'s."""
    expected = program_inputs(program)
    for index, example in enumerate(examples):
        if not isinstance(example, dspy.Example):
            fix = (f": make it dspy.Example(**record).with_inputs({', '.join(map(repr, expected.required))})"
                   if isinstance(example, dict) and expected is not None else "")
            raise UsageError(f"{where} example {index} is a {type(example).__name__}, not a dspy.Example{fix}")
        if getattr(example, "_input_keys", None) is None:
            names = ", ".join(repr(k) for k in example.keys())  # noqa: SIM118 - keys() leaves out dspy_* fields
            raise UsageError(f"{where} example {index}: no input fields marked: call .with_inputs(...) "
                             f"naming the program's inputs among its fields ({names})")
        if expected is None:
            continue
        given = set(example.inputs().keys())
        missing = [name for name in expected.required if name not in given]
        unknown = [] if expected.open_ended else sorted(given - set(expected.accepted))
        if missing or unknown:
            problems = [f"the program's input {name!r} is missing" for name in missing]
            problems += [f"{name!r} is not an input of the program" for name in unknown]
            takes = ", ".join(expected.accepted)
            raise UsageError(f"{where} example {index}: {'; '.join(problems)} (it takes: {takes})")


def check_labels(program: dspy.Module, metric: object, examples: Sequence[dspy.Example], where: str) -> None:
    """For a metric that compares an example's non-input fields with the prediction's (the
    built-ins), raise a one-line `UsageError` naming the first example with no such field, or with
    one the program does not answer (where its outputs are known)."""
    if not compares_labels(metric):
        return
    outputs = program_outputs(program)
    for index, example in enumerate(examples):
        labels = [k for k in example.labels().keys() if k not in (RESERVED_ID_FIELD, "id")]  # noqa: SIM118
        if not labels:
            raise UsageError(f"{where} example {index} has no field besides its inputs for metric "
                             f"{metric_label(metric)!r} to compare the program's answer with")
        unanswered = [k for k in labels if outputs is not None and k not in outputs]
        if unanswered:
            raise UsageError(f"{where} example {index}: {unanswered[0]!r} is not a field the program answers "
                             f"(it answers: {', '.join(outputs)}), yet metric {metric_label(metric)!r} would "
                             "compare it: leave it out of the examples, or pass a metric that reads only "
                             "the fields you mean")
