"""`--pipeline-file agent.py` and `--inputs-file inputs.jsonl`: a user's pipeline and its inputs.

The pipeline file is the user's own Python code, named on their command line, imported by path
(its folder goes on `sys.path`, as when running it). It must define one of:

- `pipeline_fn(prompt, input) -> reflex_dspy.AgentTrace`: the reference's contract, for agents
  not written in DSPy; the prompt under optimization is PROMPT;
- `build_program() -> dspy.Module`, or a module-level `program = MyModule()`: a DSPy program
  whose marked predictors (`reflex_dspy.optimize`) are optimized.

The inputs file is a JSON array or JSONL of objects with `input` (text, or an object whose keys
are the program's `forward` arguments), optional `ideal` (the reference answer; an object maps
output fields) and optional `id` (kept as the example id, so significance pairs by input id;
otherwise the content hash is). Every error is one line naming the file and line.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import dspy

from reflex_dspy.adapters.pipeline_fn import PipelineFnProgram
from reflex_dspy.adapters.pyfile import failing_line, import_file, one_line
from reflex_dspy.data import (
    ID_FIELD,
    assign_ids,
    json_kind,
    read_records,
)
from reflex_dspy.errors import UsageError
from reflex_dspy.marking import select_predictors

FACTORY_NAMES = ("build_program", "program")
INPUT_KEYS = {"input", "ideal", "id"}
PIPELINE_FN_INPUT, PIPELINE_FN_OUTPUT = "input", "output"


@dataclass
class PipelineFile:
    """What a pipeline file defines: `kind` is "pipeline_fn" or "program" (a DSPy program factory)."""

    path: Path
    kind: str
    module: ModuleType
    attribute: str

    @property
    def describe(self) -> str:
        what = {
            "pipeline_fn": "pipeline_fn(prompt, input)",
            "build_program": "build_program()",
            "program": "a DSPy program",
        }[self.attribute]
        return f"{self.path} ({what})"

    def build(self) -> dspy.Module:
        """A fresh DSPy program from the factory (`build_program()`), or the module's `program`."""
        value = getattr(self.module, self.attribute)
        if self.attribute == "build_program":
            try:
                value = value()
            except Exception as exc:
                raise UsageError(
                    f"{self.path}:{failing_line(exc, self.path.resolve())}: build_program() "
                    f"failed: {one_line(exc)}"
                ) from None
        if not isinstance(value, dspy.Module):
            got = "build_program() returned" if self.attribute == "build_program" else "program is"
            raise UsageError(f"{self.path}: {got} {type(value).__name__}, expected a dspy.Module")
        return value


def load_pipeline_file(path: str | Path) -> PipelineFile:
    """Import `path` and find what it defines; a file with neither contract is a one-line UsageError."""
    file = Path(path)
    if file.suffix != ".py":
        raise UsageError(f"{path}: a pipeline file must be a Python file (.py)")
    module = import_file(file)
    found = [n for n in ("pipeline_fn", *FACTORY_NAMES) if getattr(module, n, None) is not None]
    if not found:
        raise UsageError(
            f"{path}: defines neither pipeline_fn(prompt, input) nor a DSPy program factory "
            "(build_program() or a module-level program)"
        )
    if "pipeline_fn" in found and len(found) > 1:
        raise UsageError(f"{path}: defines both pipeline_fn and {found[1]}; keep one of them")
    attribute = found[0]
    if attribute == "pipeline_fn":
        fn = module.pipeline_fn
        if not callable(fn):
            raise UsageError(
                f"{path}: pipeline_fn is {type(fn).__name__}, expected a function (prompt, input)"
            )
        try:
            inspect.signature(fn).bind("prompt", "input")
        except TypeError:
            raise UsageError(f"{path}: pipeline_fn must accept two arguments (prompt, input)") from None
        except ValueError:
            pass  # a builtin without an inspectable signature: trust it
        return PipelineFile(file, "pipeline_fn", module, attribute)
    if attribute == "build_program" and not callable(module.build_program):
        raise UsageError(
            f"{path}: build_program is {type(module.build_program).__name__}, expected a function"
        )
    return PipelineFile(file, "program", module, attribute)


# --------------------------------------------------------------------------- inputs


def forward_params(program: dspy.Module) -> list[str]:
    """The names the program takes (what an `input` object's keys must be): its `forward`'s
    arguments, or a DSPy predictor's input fields (`program = dspy.ChainOfThought("question -> answer")`)."""
    from reflex_dspy.program_inputs import program_inputs

    known = program_inputs(program)
    return list(known.accepted) if known is not None else []


@dataclass
class InputBinding:
    """How one inputs-file record becomes an example of a given program.

    `params` are the program's input names (`["input"]` for a pipeline_fn); `output` is the field
    a text `ideal` fills (None: `ideal` must be an object naming output fields).
    """

    params: list[str]
    output: str | None


def load_inputs(path: str | Path, binding: InputBinding) -> list[dspy.Example]:
    """Examples from a JSON array or JSONL inputs file; errors name the file and line."""
    file = Path(path)
    records = read_records(file, "inputs", tables=False)
    examples, seen = [], {}
    for where, record in records:
        example = _example(record, where, binding)
        if ID_FIELD in example:
            rid = example[ID_FIELD]
            if rid in seen:
                raise UsageError(f"{where}: id {rid!r} repeats the id at {seen[rid]}; ids must be unique")
            seen[rid] = where
        examples.append(example)
    if not examples:
        raise UsageError(f"{file}: no inputs (the file has no records)")
    return assign_ids(examples)


def _example(record: Any, where: str, binding: InputBinding) -> dspy.Example:
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected an object with 'input', got {json_kind(record)}")
    unknown = sorted(set(record) - INPUT_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown field {unknown[0]!r} (allowed: input, ideal, id)")
    if record.get("input") is None:
        raise UsageError(f"{where}: missing 'input'")
    fields = _inputs(record["input"], where, binding.params)
    if record.get("ideal") is not None:
        fields.update(_ideal(record["ideal"], where, binding, set(fields)))
    record_id = record.get("id")
    if record_id is not None:
        if not isinstance(record_id, str | int) or isinstance(record_id, bool) or not str(record_id).strip():
            raise UsageError(
                f"{where}: 'id' must be a non-empty string or an integer, got {json_kind(record_id)}"
            )
        fields[ID_FIELD] = str(record_id)
    inputs = [k for k in fields if k in binding.params]
    return dspy.Example(**fields).with_inputs(*inputs)


def _inputs(value: Any, where: str, params: list[str]) -> dict[str, Any]:
    if params == [PIPELINE_FN_INPUT]:  # a pipeline_fn gets `input` as it is: text or an object
        if isinstance(value, str) and not value.strip():
            raise UsageError(f"{where}: 'input' is empty")
        return {PIPELINE_FN_INPUT: value}
    if isinstance(value, dict):
        unknown = [k for k in value if k not in params]
        if unknown:
            raise UsageError(
                f"{where}: input key {unknown[0]!r} is not an argument of the program's forward "
                f"({', '.join(params) or 'none'})"
            )
        return dict(value)
    if isinstance(value, str):
        if len(params) != 1:
            raise UsageError(
                f"{where}: the program's forward takes {', '.join(params) or 'no arguments'}; "
                "give 'input' as an object with those keys"
            )
        if not value.strip():
            raise UsageError(f"{where}: 'input' is empty")
        return {params[0]: value}
    raise UsageError(f"{where}: 'input' must be text or an object, got {json_kind(value)}")


def _ideal(value: Any, where: str, binding: InputBinding, taken: set[str]) -> dict[str, Any]:
    if isinstance(value, dict) and binding.output != PIPELINE_FN_OUTPUT:
        clash = sorted(set(value) & taken)
        if clash:
            raise UsageError(f"{where}: ideal field {clash[0]!r} is also an input")
        return {str(k): v for k, v in value.items()}
    if binding.output is None:
        raise UsageError(
            f"{where}: 'ideal' is text but the program has no single answer field; give 'ideal' "
            "as an object naming output fields, or pass --output-field"
        )
    return {binding.output: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}


# --------------------------------------------------------------------------- the program


def answer_field(program: dspy.Module, names: list[str]) -> str | None:
    """The field a text `ideal` fills: the one output of the one optimized predictor (reasoning aside)."""
    if len(names) != 1:
        return None
    predictor = dict(program.named_predictors())[names[0]]
    outputs = [f for f in predictor.signature.output_fields if f != "reasoning"]
    return outputs[0] if len(outputs) == 1 else None


def make_program(
    pipeline: PipelineFile,
    prompt: str | None,
    *,
    optimize: list[str] | None = None,
    timeout: float | None = None,
    workers: int = 1,
    output_field: str | None = None,
) -> tuple[dspy.Module, InputBinding]:
    """The program to optimize and how inputs bind to it.

    A pipeline_fn needs `prompt` (the text it receives). For a DSPy program, `prompt` (optional)
    replaces the instructions of the single optimized predictor; the selection rule is
    `marking.select_predictors` with `optimize` names. `timeout` runs a pipeline_fn's calls in
    worker processes that are stopped when they overrun (see adapters/pipeline_fn.py).
    """
    if pipeline.kind == "pipeline_fn":
        if not prompt:
            raise UsageError(f"{pipeline.path} defines pipeline_fn: give PROMPT, the prompt file it receives")
        if optimize:
            raise UsageError(
                f"{pipeline.path} defines pipeline_fn, which has one prompt: --optimize names "
                "predictors of a DSPy program"
            )
        ref = ("file", str(pipeline.path.resolve()), "pipeline_fn")
        program = PipelineFnProgram(
            pipeline.module.pipeline_fn, prompt, timeout=timeout, workers=workers, ref=ref
        )
        return program, InputBinding([PIPELINE_FN_INPUT], output_field or PIPELINE_FN_OUTPUT)
    program = pipeline.build().deepcopy()  # the file's own object stays as the user wrote it
    names = select_predictors(program, optimize)
    if prompt is not None:
        if len(names) != 1:
            raise UsageError(
                f"PROMPT replaces the instructions of the one optimized predictor, but "
                f"{len(names)} are selected ({', '.join(names)}): mark one with "
                "reflex_dspy.optimize or pass --optimize NAME"
            )
        predictor = dict(program.named_predictors())[names[0]]
        predictor.signature = predictor.signature.with_instructions(prompt)
    return program, InputBinding(forward_params(program), output_field or answer_field(program, names))
