"""Getting examples in: dataset loaders and stable example ids.

Everything downstream (the evaluation cache, per-example scores, significance tests, resume)
keys on an example's id, so ids must be stable across runs, machines and file order.

Loaded examples have the canonical fields `input` (the only input) and `output` (the gold
answer), plus `system` when a chat record carried a system message and `id` when the record
had one. Every example carries the reserved field `reflex_id`, never an input.

Nothing here writes anywhere; bad data raises `UsageError` with one line naming the file,
the line (or row / array index) and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy

from reflex_dspy.errors import UsageError

ID_FIELD = "reflex_id"
INPUT_KEYS = ("input", "question", "prompt", "text", "query", "fields.input")
OUTPUT_KEYS = ("ideal", "output", "answer", "label", "expected", "target", "response", "completion")

_USER_ROLES = {"user", "human"}
_ASSISTANT_ROLES = {"assistant", "gpt", "bot", "model", "chatgpt"}
_MISSING = object()


# -- example ids ---------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """`json.dumps` fallback for values that are not plain JSON (dspy types, pydantic models)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "toDict"):
        return value.toDict()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def _content_hash(example: Mapping[str, Any] | dspy.Example) -> str:
    """sha1 of the canonical JSON of every field except `reflex_id`, 12 hex chars."""
    fields = {str(k): v for k, v in example.items() if k != ID_FIELD}
    canonical = json.dumps(
        fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_jsonable
    )
    return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:12]


def example_id(example: Mapping[str, Any] | dspy.Example) -> str:
    """The example's `reflex_id`, or its content hash when it has none yet."""
    if ID_FIELD in example and example[ID_FIELD] is not None:
        return str(example[ID_FIELD])
    return _content_hash(example)


def input_text(example: dspy.Example) -> dict[str, str]:
    """The example's inputs as text, its id left out: what a demo drawn from it shows."""
    return {k: str(v) for k, v in example.inputs().items() if k != ID_FIELD}


def assign_ids(examples: Iterable[dspy.Example]) -> list[dspy.Example]:
    """Copies of `examples` with a unique, stable `reflex_id` each (input keys kept).

    An existing `reflex_id` is kept (so assigning twice is a no-op); else the data's own `id`
    field when it is unique in the dataset; else the content hash. Identical examples share a
    base id and get `#2`, `#3` suffixes in order, which is still stable because they are
    indistinguishable.
    """
    examples = list(examples)
    own = [str(ex[ID_FIELD]) if ID_FIELD in ex and ex[ID_FIELD] is not None else None for ex in examples]
    data_ids = [str(ex["id"]) if "id" in ex and ex["id"] is not None else None for ex in examples]
    data_id_counts = Counter(i for i in data_ids if i is not None)

    bases = []
    for ex, mine, data_id in zip(examples, own, data_ids, strict=True):
        if mine is not None:
            bases.append(mine)
        elif data_id is not None and data_id_counts[data_id] == 1:
            bases.append(data_id)
        else:
            bases.append(_content_hash(ex))

    all_bases = set(bases)
    used: set[str] = set()
    result = []
    for ex, base in zip(examples, bases, strict=True):
        rid = base
        if rid in used:
            k = 2
            while f"{base}#{k}" in used or f"{base}#{k}" in all_bases:
                k += 1
            rid = f"{base}#{k}"
        used.add(rid)
        copy = ex.copy(**{ID_FIELD: rid})
        input_keys = getattr(copy, "_input_keys", None)
        if input_keys and ID_FIELD in input_keys:  # the id is bookkeeping, never model input
            copy = copy.with_inputs(*(input_keys - {ID_FIELD}))
        result.append(copy)
    return result


# -- loading -------------------------------------------------------------------------


def json_kind(value: Any) -> str:
    """JSON's name for a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _lookup(record: Mapping[str, Any], path: str) -> Any:
    """The value at `path` (a key, or dotted path into nested objects/arrays), else `_MISSING`.

    A literal key wins over the dotted walk so CSV headers like `fields.input` work too.
    Nulls count as missing: they carry no text.
    """
    if path in record:
        value = record[path]
        return _MISSING if value is None else value
    node: Any = record
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return _MISSING if node is None else node


def _first(record: Mapping[str, Any], paths: Sequence[str]) -> tuple[str | None, Any]:
    for path in paths:
        value = _lookup(record, path)
        if value is not _MISSING:
            return path, value
    return None, _MISSING


def _as_input(value: Any, name: str, where: str) -> str:
    """Input text: strings as they are, numbers as text; structures are a user error."""
    if isinstance(value, str):
        if not value.strip():
            raise UsageError(f"{where}: input field '{name}' is empty")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise UsageError(f"{where}: input field '{name}' must be text, got {json_kind(value)}")


def _as_output(value: Any) -> str:
    """Gold answers are text; structured gold (dicts, lists, numbers) becomes its JSON text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _message_text(content: Any, where: str, container: str) -> str:
    """Text of a chat message's content: a string, or OpenAI-style text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type", "text") == "text"
        ]
        return "".join(p for p in parts if isinstance(p, str))
    raise UsageError(f"{where}: message content in '{container}' must be text, got {json_kind(content)}")


def _turns(
    record: Mapping[str, Any], key: str, role_key: str, text_key: str, where: str
) -> list[tuple[str, str]]:
    """(role, text) pairs of a chat transcript, validated."""
    turns = record[key]
    if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
        raise UsageError(f"{where}: '{key}' must be a list of objects with '{role_key}' and '{text_key}'")
    result = []
    for turn in turns:
        role = turn.get(role_key)
        if not isinstance(role, str):
            raise UsageError(f"{where}: every message in '{key}' needs a '{role_key}'")
        result.append((role.lower(), _message_text(turn.get(text_key), where, key)))
    return result


def _split_chat(turns: list[tuple[str, str]]) -> tuple[str | None, str | None, str | None]:
    """(system, last user turn, final assistant turn) of a transcript.

    When the transcript ends with an assistant turn it is the gold answer and the input is
    the last user turn before it; earlier turns are context we do not replay.
    """
    system_parts = [text for role, text in turns if role == "system"]
    system = "\n\n".join(system_parts) if system_parts else None
    final = None
    if turns and turns[-1][0] in _ASSISTANT_ROLES:
        final = turns[-1][1]
        turns = turns[:-1]
    user = next((text for role, text in reversed(turns) if role in _USER_ROLES), None)
    return system, user, final


def _is_chat_list(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def _record_to_example(
    record: Any,
    where: str,
    input_field: str | None,
    output_field: str | None,
    require_output: bool,
) -> dspy.Example:
    """One data record in any recognised shape → `Example(input, output[, system, id])`."""
    if not isinstance(record, Mapping):
        raise UsageError(f"{where}: expected a JSON object, got {json_kind(record)}")

    system = input_text = chat_output = None
    input_name: str | None = None
    chat_key = "messages" if "messages" in record else "input" if _is_chat_list(record.get("input")) else None

    # Shape-specific input (and a transcript's final assistant turn as a fallback output).
    if input_field is None:
        if chat_key is not None:  # OpenAI chat / evals: {"messages" | "input": [...], "ideal": ...}
            system, user, chat_output = _split_chat(_turns(record, chat_key, "role", "content", where))
            if user is None:
                raise UsageError(f"{where}: no user message in '{chat_key}'")
            input_text, input_name = user, chat_key
        elif "conversations" in record:  # ShareGPT
            system, user, chat_output = _split_chat(_turns(record, "conversations", "from", "value", where))
            if user is None:
                raise UsageError(f"{where}: no human turn in 'conversations'")
            input_text, input_name = user, "conversations"
        elif isinstance(record.get("instruction"), str):  # Alpaca
            extra = record.get("input")
            if extra is not None and not isinstance(extra, str):
                raise UsageError(f"{where}: input field 'input' must be text, got {json_kind(extra)}")
            input_text = record["instruction"] + ("\n\n" + extra if extra and extra.strip() else "")
            input_name = "instruction"
            input_text = _as_input(input_text, input_name, where)
        else:
            input_name, value = _first(record, INPUT_KEYS)
            if input_name is None:
                raise UsageError(
                    f"{where}: no input field (looked for {', '.join(INPUT_KEYS)}; use --input-field)"
                )
            input_text = _as_input(value, input_name, where)
    else:
        value = _lookup(record, input_field)
        if value is _MISSING:
            raise UsageError(f"{where}: no input field '{input_field}' (from --input-field)")
        input_name, input_text = input_field, _as_input(value, input_field, where)
    if not input_text.strip():
        raise UsageError(f"{where}: input field '{input_name}' is empty")

    # Output: the named field, else the usual names, else the transcript's final answer.
    if output_field is not None:
        value = _lookup(record, output_field)
        if value is _MISSING and require_output:
            raise UsageError(f"{where}: no output field '{output_field}' (from --output-field)")
    else:
        _, value = _first(record, OUTPUT_KEYS)
        if value is _MISSING and chat_output is not None:
            value = chat_output
        if value is _MISSING and require_output:
            also = ", or a final assistant turn" if chat_key or "conversations" in record else ""
            raise UsageError(
                f"{where}: no output field (looked for {', '.join(OUTPUT_KEYS)}{also}; use --output-field)"
            )

    fields: dict[str, Any] = {"input": input_text}
    if value is not _MISSING:
        fields["output"] = _as_output(value)
    if system is not None:
        fields["system"] = system
    record_id = record.get("id")
    if isinstance(record_id, str | int) and not isinstance(record_id, bool):
        fields["id"] = str(record_id)
    return dspy.Example(**fields).with_inputs("input")


def read_text_file(path: Path, kind: str) -> str:
    """The UTF-8 text of a user's `kind` file ("dataset", "prompt", ...), or a one-line UsageError."""
    if not path.exists():
        raise UsageError(f"{path}: no such {kind} file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a {kind} file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {kind} file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")  # tolerate the BOM spreadsheet tools write
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: {kind} file is not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None


def read_json_file(path: str | Path, kind: str) -> Any:
    """The parsed JSON of a user's `kind` file (splits, results), or a one-line UsageError with the line."""
    path = Path(path)
    try:
        return json.loads(read_text_file(path, kind))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: {kind} file is not valid JSON ({exc.msg})") from None


def _jsonl_records(path: Path, text: str) -> Iterable[tuple[str, Any]]:
    # split("\n") rather than splitlines(): JSON strings may legally hold U+2028 and friends.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: invalid JSON ({exc.msg})") from None


def _json_array_records(path: Path, text: str) -> Iterable[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON array of objects (or JSONL), got {json_kind(data)}")
    for index, record in enumerate(data):
        yield f"{path}[{index}]", record


def _csv_records(path: Path, text: str, delimiter: str) -> Iterable[tuple[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        if len(set(header)) != len(header) or any(not h.strip() for h in header):
            raise UsageError(f"{path}:1: header row has empty or repeated column names")
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise UsageError(
                    f"{path}:{start}: row has {len(row)} values but the header has {len(header)}"
                )
            # Empty cells are CSV's only way to say "missing".
            yield f"{path}:{start}", {h: cell for h, cell in zip(header, row, strict=False) if cell != ""}
    except csv.Error as exc:
        raise UsageError(f"{path}:{reader.line_num}: invalid CSV ({exc})") from None


def read_records(path: str | Path, kind: str, *, tables: bool = True) -> list[tuple[str, Any]]:
    """`(where, record)` for each record of a JSONL, JSON-array or (with `tables`) CSV/TSV file.

    `where` names the file and line (or array index) for error messages. A file is a JSON array
    when it starts with `[` and is not named .jsonl / .ndjson; `kind` names the file in errors.
    """
    path = Path(path)
    text = read_text_file(path, kind)
    suffix = path.suffix.lower()
    if tables and suffix in (".csv", ".tsv"):
        return list(_csv_records(path, text, "\t" if suffix == ".tsv" else ","))
    if suffix not in (".jsonl", ".ndjson") and text.lstrip().startswith("["):
        return list(_json_array_records(path, text))
    return list(_jsonl_records(path, text))


def load_dataset(
    path: str | Path,
    *,
    input_field: str | None = None,
    output_field: str | None = None,
    require_output: bool = True,
) -> list[dspy.Example]:
    """Load JSONL, a JSON array or CSV/TSV into examples with `input`, `output` and `reflex_id`.

    Shapes: OpenAI chat (`messages` + `ideal`, or a final assistant message), OpenAI evals
    (`input` as a message list), ShareGPT, Alpaca, and any object whose fields are named by
    `input_field` / `output_field` (dotted paths reach nested objects) or found under the
    usual names. Explicit field names win over shape detection. `require_output=False` allows
    label-free data (judge-only runs).
    """
    path = Path(path)
    records = read_records(path, "dataset")
    examples = [
        _record_to_example(record, where, input_field, output_field, require_output)
        for where, record in records
    ]
    if not examples:
        raise UsageError(f"{path}: empty dataset (no records)")
    check_unique_ids([where for where, _ in records], examples)
    return assign_ids(examples)


def check_unique_ids(places: Sequence[str], examples: Sequence[dspy.Example]) -> None:
    """Two records with the same `id` are an error naming both: a pinned split could not tell them apart.

    (`assign_ids` would otherwise fall back to content hashes for both, silently, and a splits
    file listing that id would then fail with a misleading "not in the dataset".)
    """
    first: dict[str, str] = {}
    for where, ex in zip(places, examples, strict=True):
        if "id" not in ex or ex["id"] is None:
            continue
        key = str(ex["id"])
        if key in first:
            raise UsageError(f"{where}: duplicate id {key!r} (also {first[key]}); ids must be unique")
        head, sep, line = where.rpartition(":")
        first[key] = f"on line {line}" if sep and line.isdigit() else f"at {where}"
