"""The whole execution trace of one pipeline run, as the judge and the reasoning model see it.

A pipeline is a multi-node program (an agent that calls tools, a retrieve-then-answer chain).
Its final answer alone cannot show whether the tools were used or the answer came from memory,
so every node is kept in order: predictor calls and tool calls with their inputs and outputs,
each flagged `[optimize]` (a node whose prompt is being optimized) or `[context]` (fixed).

`AgentTrace` is also the return type of the `pipeline_fn(prompt, input)` contract for agents not
written in DSPy. This module imports nothing heavy: a user's pipeline file (and each worker
process that runs it) can import `reflex_dspy.AgentTrace` cheaply.

While a metric runs, the evaluator makes the example's trace available through
`current_trace()`, so a metric (the built-in judge does) can judge the whole trace without it
being passed as DSPy's `trace` argument (which DSPy metrics read as "bootstrapping").
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from reflex_dspy.plain import plain  # re-exported: adapters import it from here

KINDS = ("predictor", "tool")
# A program that knows its own trace (a pipeline_fn wrapper) sets it on its prediction under this name.
PREDICTION_TRACE_ATTR = "_reflex_agent_trace"
VALUE_CHARS = 800  # a value longer than this is clipped in a rendering, with a visible marker
INLINE_CHARS = 120  # short one-line values stay on their label's line

_DATA_TAG = re.compile(r"</?data\b", re.IGNORECASE)


def as_data(text: str, *, inline: bool = False) -> str:
    """Wrap untrusted text (dataset rows, model outputs) in <data> tags for a judge or proposer.

    Tags inside the text are defanged so an output cannot close the block early and smuggle in
    instructions (prompt injection through the data).
    """
    safe = _DATA_TAG.sub(lambda m: m.group(0) + "_", text)
    return f"<data>{safe}</data>" if inline else f"<data>\n{safe}\n</data>"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(plain(value), ensure_ascii=False)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [clipped {len(text) - limit} more characters]"


def _value(value: Any, limit: int, delimit: bool = True) -> str:
    """One value: clipped, wrapped as <data> (or, inside an outer data block, only defanged)."""
    text = clip(_text(value), limit)
    if not delimit:
        text = _DATA_TAG.sub(lambda m: m.group(0) + "_", text)
    if "\n" not in text and len(text) <= INLINE_CHARS:
        return as_data(text, inline=True) if delimit else text
    block = as_data(text) if delimit else text
    return "\n" + "\n".join("      " + line for line in block.splitlines())


@dataclass
class TraceNode:
    """One step of a pipeline: a predictor call or a tool call.

    For a tool, `inputs` are the call's arguments and `outputs` its result (`{"result": ...}`).
    `optimize=True` marks the node whose prompt is being optimized; the others are context.
    `error` holds what went wrong in this node, if anything.
    """

    name: str
    kind: str = "predictor"
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    optimize: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("TraceNode.name must be a non-empty string")
        if self.kind not in KINDS:
            raise ValueError(f"TraceNode.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for label in ("inputs", "outputs"):
            if not isinstance(getattr(self, label), Mapping):
                raise ValueError(f"TraceNode.{label} of {self.name!r} must be a dict")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "inputs": plain(self.inputs),
            "outputs": plain(self.outputs),
            "optimize": bool(self.optimize),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceNode:
        return cls(
            data["name"],
            data.get("kind", "predictor"),
            dict(data.get("inputs") or {}),
            dict(data.get("outputs") or {}),
            bool(data.get("optimize", False)),
            data.get("error"),
        )

    def render(self, order: int, limit: int = VALUE_CHARS, delimit: bool = True) -> str:
        flag = "[optimize]" if self.optimize else "[context]"
        lines = [f"[{order}] {self.name} ({self.kind}) {flag}"]
        if self.kind == "tool":
            lines.append("  arguments:" if self.inputs else "  arguments: (none)")
            lines += [f"    {k}: {_value(v, limit, delimit)}" for k, v in self.inputs.items()]
            result = self.outputs.get("result", self.outputs) if self.outputs else None
            if result is not None:
                lines.append(f"  result: {_value(result, limit, delimit)}")
        else:
            for label, values in (("inputs", self.inputs), ("outputs", self.outputs)):
                lines.append(f"  {label}:" if values else f"  {label}: (none)")
                lines += [f"    {k}: {_value(v, limit, delimit)}" for k, v in values.items()]
        if self.error:
            lines.append(f"  error: {_value(self.error, limit, delimit)}")
        return "\n".join(lines)


@dataclass
class AgentTrace:
    """Every node of one pipeline run, in order, and its final answer.

    Build one in a `pipeline_fn` with `add()` / `tool()`, or let the evaluator capture it from a
    DSPy program (predictor calls from DSPy's trace, `dspy.Tool` calls through DSPy callbacks).
    """

    nodes: list[TraceNode] = field(default_factory=list)
    final_answer: Any = None
    input_id: str | None = None

    def __post_init__(self) -> None:
        self.nodes = list(self.nodes)
        for node in self.nodes:
            if not isinstance(node, TraceNode):
                raise ValueError(f"AgentTrace.nodes must hold TraceNode objects, got {type(node).__name__}")

    def add(
        self,
        name: str,
        *,
        kind: str = "predictor",
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        optimize: bool = False,
        error: str | None = None,
    ) -> TraceNode:
        """Append a node and return it."""
        node = TraceNode(name, kind, dict(inputs or {}), dict(outputs or {}), optimize, error)
        self.nodes.append(node)
        return node

    def tool(
        self, name: str, arguments: Mapping[str, Any], result: Any, *, error: str | None = None
    ) -> TraceNode:
        """Append a tool call with its arguments and result."""
        return self.add(name, kind="tool", inputs=arguments, outputs={"result": result}, error=error)

    @property
    def is_pipeline(self) -> bool:
        """More than one node or any tool call: then the trace says what input and answer alone cannot."""
        return len(self.nodes) > 1 or any(n.kind == "tool" for n in self.nodes)

    @property
    def optimized(self) -> list[str]:
        return [n.name for n in self.nodes if n.optimize]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_id": self.input_id,
            "nodes": [n.to_dict() for n in self.nodes],
            "final_answer": plain(self.final_answer),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentTrace:
        return cls(
            [TraceNode.from_dict(n) for n in data.get("nodes") or []],
            data.get("final_answer"),
            data.get("input_id"),
        )

    def render(
        self, *, value_chars: int = VALUE_CHARS, max_chars: int | None = None, delimit: bool = True
    ) -> str:
        """The trace as delimited text: each node headed `[order] name (kind) [optimize]|[context]`,
        every value wrapped as <data> (`delimit=False` when the whole goes inside one data block),
        long values clipped with a visible marker, and the whole cut at `max_chars` (with a marker)."""
        head = f'<trace input_id="{self.input_id}">' if self.input_id else "<trace>"
        parts = [head, *(n.render(i, value_chars, delimit) for i, n in enumerate(self.nodes, 1))]
        if not self.nodes:
            parts.append("(no steps were recorded)")
        parts += [f"final answer: {_value(self.final_answer, value_chars, delimit)}", "</trace>"]
        text = "\n".join(parts)
        if max_chars is not None and len(text) > max_chars:
            cut = len(text) - max_chars
            text = f"{text[:max_chars]}\n… [trace clipped: {cut} more characters]\n</trace>"
        return text

    @classmethod
    def from_steps(
        cls,
        steps: list[Mapping[str, Any]],
        tools: list[Mapping[str, Any]],
        optimized: set[str] | frozenset[str],
        final_answer: Any = None,
        input_id: str | None = None,
    ) -> AgentTrace:
        """A DSPy program's trace: predictor `steps` (the evaluator's plain DSPy trace) interleaved
        with the `tools` a `ToolRecorder` saw, each placed after the predictor calls finished before it."""
        nodes: list[TraceNode] = []
        pending = sorted(tools, key=lambda t: t["position"])
        for index in range(len(steps) + 1):
            while pending and pending[0]["position"] <= index:
                t = pending.pop(0)
                nodes.append(
                    TraceNode(
                        t["name"],
                        "tool",
                        dict(t["arguments"]),
                        {"result": t.get("result")},
                        error=t.get("error"),
                    )
                )
            if index < len(steps):
                step = steps[index]
                name = step["predictor"]
                nodes.append(
                    TraceNode(
                        name, "predictor", dict(step["inputs"]), dict(step["outputs"]), name in optimized
                    )
                )
        return cls(nodes, final_answer, input_id)


def tool_recorder(root: Any = None) -> Any:
    """A DSPy callback that records every `dspy.Tool` call (arguments, result or error) in order.

    Each call also notes how many predictor calls DSPy's trace held when it started, which is
    where it belongs among them. Used inside `dspy.context(callbacks=[...], trace=[])`. Each new
    call of the `root` module starts the record afresh, so a retried run keeps only its own calls.
    """
    return _recorder_class()(root)


def holds_tools(program: Any) -> bool:
    """Whether a module of `program` holds a `dspy.Tool` (an attribute, or inside a list or dict
    attribute as ReAct keeps them). Only then is `tool_recorder` installed: any DSPy callback makes
    every module, adapter and LM call inspect its arguments, about half a millisecond per example
    (bench/: overhead). A tool built inside `forward` is not seen, and its calls are not recorded.
    """
    import dspy

    for _, module in program.named_sub_modules():
        for value in vars(module).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else (value,)
            if any(isinstance(item, dspy.Tool) for item in items):
                return True
    return False


_RECORDER: type | None = None


def _recorder_class() -> type:
    global _RECORDER
    if _RECORDER is None:  # built on first use: importing dspy here would slow `import reflex_dspy`
        import dspy
        from dspy.utils.callback import BaseCallback

        class ToolRecorder(BaseCallback):
            def __init__(self, root: Any = None) -> None:
                self.root = root
                self.calls: list[dict[str, Any]] = []
                self._open: dict[str, dict[str, Any]] = {}

            def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
                if instance is self.root:
                    self.calls, self._open = [], {}

            def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
                arguments = inputs.get("kwargs", inputs)
                call = {
                    "name": getattr(instance, "name", None) or type(instance).__name__,
                    "arguments": plain(arguments),
                    "result": None,
                    "error": None,
                    "position": len(dspy.settings.trace or []),
                }
                self._open[call_id] = call
                self.calls.append(call)

            def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
                call = self._open.pop(call_id, None)
                if call is not None:
                    call["result"] = plain(outputs)
                    if exception is not None:
                        from reflex_dspy.tracking.redact import redact_text  # a tool error may echo a key

                        call["error"] = redact_text(f"{type(exception).__name__}: {exception}")

        _RECORDER = ToolRecorder
    return _RECORDER


# -- the trace of the example a metric is scoring -------------------------------------------------
_CURRENT: ContextVar[AgentTrace | None] = ContextVar("reflex_current_trace", default=None)


def current_trace() -> AgentTrace | None:
    """The execution trace of the example being scored, while the evaluator calls the metric."""
    return _CURRENT.get()


@contextlib.contextmanager
def using_trace(trace: AgentTrace | None) -> Iterator[None]:
    """Make `trace` the `current_trace()` inside the block (per thread)."""
    token = _CURRENT.set(trace)
    try:
        yield
    finally:
        _CURRENT.reset(token)
