"""A DSPy adapter that sends the instructions as a plain system prompt and reads raw text back.

DSPy's own adapters wrap every request in field markers (`[[ ## output ## ]]`) or JSON and
must parse the reply back into fields. Small local models do not follow those formats (with
ChatAdapter a 0.5B model failed to parse on 24 of 30 calls, see local-models.md), and a user
who brings a prompt file expects that prompt, verbatim, to be what the model sees. So this
adapter sends exactly: system = the signature's instructions, each demo as a user/assistant
turn pair, then the input as the user message; and the stripped completion is the answer.

It plugs into DSPy's normal call path (`dspy.Predict` → `Adapter.__call__`/`acall` → the LM),
so usage tracking, history, callbacks and caching still apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import dspy
from dspy.adapters.utils import serialize_for_json
from dspy.clients.base_lm import BaseLM
from dspy.signatures.signature import Signature


@lru_cache(maxsize=256)  # four lookups per model call on a handful of signature classes per run
def _single_fields(signature: type[Signature]) -> tuple[str, str]:
    """(input name, output name) of a one-input, one-text-output signature; TypeError otherwise."""
    inputs, outputs = list(signature.input_fields), list(signature.output_fields)
    if len(inputs) != 1 or len(outputs) != 1:
        raise TypeError(
            "SystemPromptAdapter needs a signature with exactly one input and one output field, got "
            f"inputs ({', '.join(inputs)}) -> outputs ({', '.join(outputs)}); "
            "use dspy.ChatAdapter or dspy.JSONAdapter for multi-field signatures"
        )
    annotation = signature.output_fields[outputs[0]].annotation
    if annotation is not str:
        raise TypeError(
            f"SystemPromptAdapter returns raw text, so output field '{outputs[0]}' must be str, got {annotation!r}"
        )
    return inputs[0], outputs[0]


def _text(value: Any) -> str:
    """A field value as message text: strings verbatim, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(serialize_for_json(value), ensure_ascii=False)


class SystemPromptAdapter(dspy.Adapter):
    """Plain chat format for one-input/one-output signatures: no field markers, no parsing.

    Use it per call (`dspy.context(adapter=SystemPromptAdapter())`) or globally; a signature
    with more fields raises TypeError rather than being silently mangled.
    """

    def format(
        self,
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """[system = instructions, (demo user, demo assistant)*, user = input]."""
        _single_fields(signature)  # fail before any LM call on a signature we cannot render
        messages = [{"role": "system", "content": self.format_system_message(signature)}]
        messages.extend(self.format_demos(signature, demos))
        messages.append({"role": "user", "content": self.format_user_message_content(signature, inputs)})
        return messages

    def format_system_message(self, signature: type[Signature]) -> str:
        return self.format_task_description(signature)

    def format_task_description(self, signature: type[Signature]) -> str:
        return signature.instructions

    def format_field_description(self, signature: type[Signature]) -> str:
        return ""  # no field descriptions: the prompt is the whole system message

    def format_field_structure(self, signature: type[Signature]) -> str:
        return ""  # no field markers: the reply is the answer as it stands

    def format_demos(self, signature: type[Signature], demos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each demo with both an input and an output value as a user/assistant pair.

        A demo missing either side has no plain-chat rendering (DSPy's adapters annotate such
        demos with field markers), so it is left out rather than shown half-empty.
        """
        input_name, output_name = _single_fields(signature)
        messages = []
        for demo in demos:
            if not isinstance(demo, Mapping | dspy.Example):
                continue
            if demo.get(input_name) is None or demo.get(output_name) is None:
                continue
            messages.append({"role": "user", "content": _text(demo[input_name])})
            messages.append({"role": "assistant", "content": _text(demo[output_name])})
        return messages

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        input_name, _ = _single_fields(signature)
        return f"{prefix}{_text(inputs.get(input_name, ''))}{suffix}"

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: dict[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        _, output_name = _single_fields(signature)
        value = outputs.get(output_name)
        return _text(value) if value is not None else (missing_field_message or "")

    def format_finetune_data(
        self,
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
        outputs: dict[str, Any],
    ) -> dict[str, list[dict[str, Any]]]:
        """OpenAI fine-tuning record of one call: the formatted request plus the answer turn."""
        messages = self.format(signature, demos, inputs)
        messages.append(
            {"role": "assistant", "content": self.format_assistant_message_content(signature, outputs)}
        )
        return {"messages": messages}

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """The stripped completion is the output; this cannot fail."""
        _, output_name = _single_fields(signature)
        return {output_name: (completion or "").strip()}

    def _call_postprocess(
        self,
        processed_signature: type[Signature],
        original_signature: type[Signature],
        outputs: list[dict[str, Any] | str],
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Every completion, empty ones included, is an answer.

        The base class raises AdapterParseError on an empty reply. For a raw-text prompt an
        empty reply is simply a (wrong) answer, to be scored by the metric like any other,
        not a format failure. Tool calls and native response types cannot occur here: the
        single output is plain `str`.
        """
        values = []
        for output in outputs:
            text = output.get("text") if isinstance(output, dict) else output
            value = self.parse(processed_signature, text or "")
            if isinstance(output, dict) and output.get("logprobs"):
                value["logprobs"] = output["logprobs"]
            values.append(value)
        return values
