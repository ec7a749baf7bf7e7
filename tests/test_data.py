"""Dataset loading, example ids, splits and batches (reflex_dspy.data)."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest

from reflex_dspy.data import assign_ids, example_id, load_dataset
from reflex_dspy.errors import UsageError
from reflex_dspy.splits import Splits, sample_batch, split_dataset

# The shared data sits beside the checkout (`../shared`), in CI's clones as in the workspace.
PROMPT_OPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompt-ops"
needs_shared_data = pytest.mark.skipif(not PROMPT_OPS.is_dir(), reason=f"{PROMPT_OPS} is not present")


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def make_examples(n: int) -> list[dspy.Example]:
    return [dspy.Example(input=f"question {i}", output=f"answer {i}").with_inputs("input") for i in range(n)]


def usage_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "usage errors are one line"
    return message


# -- loader shapes -----------------------------------------------------------------------


def test_openai_chat_shape_uses_last_user_message_and_keeps_system(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": "What is 2+2?"},
                ],
                "ideal": "4",
            }
        ],
    )
    [ex] = load_dataset(path)
    assert ex.input == "What is 2+2?"
    assert ex.output == "4"
    assert ex.system == "Be terse."
    assert set(ex.inputs().keys()) == {"input"}  # the system message is data, never an input


def test_openai_chat_final_assistant_message_is_the_answer(tmp_path):
    path = write_jsonl(
        tmp_path / "ft.jsonl",
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}],
    )
    [ex] = load_dataset(path)
    assert (ex.input, ex.output) == ("Hi", "Hello!")
    assert "system" not in ex


def test_openai_evals_shape_input_as_message_list(tmp_path):
    record = {"input": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "ideal": "A"}
    [ex] = load_dataset(write_jsonl(tmp_path / "evals.jsonl", [record]))
    assert (ex.input, ex.output, ex.system) == ("Q", "A", "S")


def test_openai_content_parts_are_joined(tmp_path):
    content = [
        {"type": "text", "text": "Hello "},
        {"type": "image_url", "image_url": {}},
        {"type": "text", "text": "there"},
    ]
    record = {"messages": [{"role": "user", "content": content}], "ideal": "x"}
    [ex] = load_dataset(write_jsonl(tmp_path / "parts.jsonl", [record]))
    assert ex.input == "Hello there"


def test_sharegpt_shape(tmp_path):
    record = {
        "conversations": [
            {"from": "system", "value": "You are kind."},
            {"from": "human", "value": "earlier"},
            {"from": "gpt", "value": "earlier reply"},
            {"from": "human", "value": "Name a colour."},
            {"from": "gpt", "value": "Blue."},
        ]
    }
    [ex] = load_dataset(write_jsonl(tmp_path / "sharegpt.jsonl", [record]))
    assert (ex.input, ex.output, ex.system) == ("Name a colour.", "Blue.", "You are kind.")


def test_alpaca_shape_joins_instruction_and_input(tmp_path):
    records = [
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
    ]
    first, second = load_dataset(write_jsonl(tmp_path / "alpaca.jsonl", records))
    assert first.input == "Translate to French.\n\ncat"
    assert first.output == "chat"
    assert second.input == "Say hi."


def test_generic_fields_are_found_by_their_usual_names(tmp_path):
    records = [
        {"question": "Q1", "answer": "A1"},
        {"prompt": "Q2", "label": "A2"},
        {"text": "Q3", "target": 3},
    ]
    exs = load_dataset(write_jsonl(tmp_path / "generic.jsonl", records))
    assert [(e.input, e.output) for e in exs] == [("Q1", "A1"), ("Q2", "A2"), ("Q3", "3")]


def test_explicit_fields_and_dotted_paths(tmp_path):
    records = [{"meta": {"q": "Q"}, "gold": {"labels": ["a", "b"]}, "input": "ignored"}]
    [ex] = load_dataset(
        write_jsonl(tmp_path / "d.jsonl", records), input_field="meta.q", output_field="gold.labels"
    )
    assert ex.input == "Q"
    assert ex.output == '["a", "b"]'  # structured gold becomes its JSON text


def test_structured_output_is_serialised_to_json(tmp_path):
    [ex] = load_dataset(write_jsonl(tmp_path / "d.jsonl", [{"input": "Q", "output": {"k": "ü", "n": 1}}]))
    assert json.loads(ex.output) == {"k": "ü", "n": 1}
    assert "ü" in ex.output


def test_json_array_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps([{"input": "a", "answer": "b"}, {"input": "c", "answer": "d"}]), encoding="utf-8"
    )
    assert [(e.input, e.output) for e in load_dataset(path)] == [("a", "b"), ("c", "d")]


def test_blank_lines_are_skipped_and_bom_tolerated(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"input": "a", "output": "b"}\n\n   \n{"input": "c", "output": "d"}\n')
    assert [e.input for e in load_dataset(path)] == ["a", "c"]


@needs_shared_data
def test_bundled_facility_support_loads_without_flags():
    exs = load_dataset(PROMPT_OPS / "facility_support.json")
    assert len(exs) == 200
    first = json.loads((PROMPT_OPS / "facility_support.json").read_text())[0]
    assert exs[0].input == first["fields"]["input"]
    assert exs[0].output == first["answer"]
    assert json.loads(exs[0].output)["categories"]  # the gold is a JSON document, kept as text
    assert len({example_id(e) for e in exs}) == 200


@needs_shared_data
def test_bundled_web_of_lies_loads_without_flags():
    exs = load_dataset(PROMPT_OPS / "web_of_lies.json")
    assert len(exs) == 250
    assert exs[0].input.startswith("Question: Sherrie tells the truth.")
    assert exs[0].output == "No"
    assert {e.output for e in exs} == {"Yes", "No"}


def test_csv_with_header_and_dotted_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer\n"What, with a comma?","yes"\n"multi\nline",no\n', encoding="utf-8")
    exs = load_dataset(path)
    assert [(e.input, e.output) for e in exs] == [("What, with a comma?", "yes"), ("multi\nline", "no")]
    dotted = tmp_path / "dotted.csv"
    dotted.write_text("fields.input,gold\nhello,world\n", encoding="utf-8")
    [ex] = load_dataset(dotted, output_field="gold")
    assert (ex.input, ex.output) == ("hello", "world")


def test_label_free_data_loads_only_when_allowed(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "just a question"}])
    [ex] = load_dataset(path, require_output=False)
    assert ex.input == "just a question"
    assert "output" not in ex
    assert "no output field" in usage_error(load_dataset, path)


def test_data_id_field_is_kept(tmp_path):
    exs = load_dataset(write_jsonl(tmp_path / "d.jsonl", [{"id": 7, "input": "a", "output": "b"}]))
    assert exs[0].id == "7"
    assert example_id(exs[0]) == "7"


# -- loader errors (exact one-line messages) ---------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    assert usage_error(load_dataset, path) == f"{path}: no such dataset file"


def test_directory_is_not_a_dataset(tmp_path):
    assert usage_error(load_dataset, tmp_path) == f"{tmp_path}: is a directory, not a dataset file"


def test_unreadable_file(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "output": "b"}])

    def refuse(self):  # chmod cannot stop root, so refuse at the OS boundary instead
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert usage_error(load_dataset, path) == f"{path}: cannot read dataset file (Permission denied)"


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"input": "a", "output": "b"}\n{"input": "\xff", "output": "b"}\n')
    assert usage_error(load_dataset, path) == f"{path}:2: dataset file is not UTF-8 text (byte 0xff)"


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"input": str(i), "output": "x"}) for i in range(6)] + [
        '{"input": "a" "output": "b"}'
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert usage_error(load_dataset, path) == f"{path}:7: invalid JSON (Expecting ',' delimiter)"


def test_malformed_json_array_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        '[\n  {"input": "a", "output": "b"},\n  {"input": "c" "output": "d"}\n]\n', encoding="utf-8"
    )
    assert usage_error(load_dataset, path) == f"{path}:3: invalid JSON (Expecting ',' delimiter)"


def test_missing_input_field(tmp_path):
    path = write_jsonl(
        tmp_path / "data.jsonl", [{"input": "a", "output": "b"}] * 2 + [{"body": "x", "output": "b"}]
    )
    assert usage_error(load_dataset, path) == (
        f"{path}:3: no input field (looked for input, question, prompt, text, query, fields.input; use --input-field)"
    )


def test_missing_output_field(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"input": "a", "result": "b"}])
    assert usage_error(load_dataset, path) == (
        f"{path}:1: no output field (looked for ideal, output, answer, label, expected, target, response, "
        "completion; use --output-field)"
    )


def test_missing_explicit_fields(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"input": "a", "output": "b"}])
    assert (
        usage_error(load_dataset, path, input_field="q")
        == f"{path}:1: no input field 'q' (from --input-field)"
    )
    assert usage_error(load_dataset, path, output_field="gold.x") == (
        f"{path}:1: no output field 'gold.x' (from --output-field)"
    )


def test_record_errors_in_a_json_array_name_the_index(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"input": "a", "answer": "b"}, {"input": "c"}]), encoding="utf-8")
    assert usage_error(load_dataset, path).startswith(f"{path}[1]: no output field (looked for ideal,")


def test_wrong_types(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [["not", "an", "object"]])
    assert usage_error(load_dataset, path) == f"{path}:1: expected a JSON object, got array"
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": {"a": 1}, "output": "x"}])
    assert usage_error(load_dataset, path) == f"{path}:1: input field 'input' must be text, got object"
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": "hello", "ideal": "x"}])
    assert usage_error(load_dataset, path) == (
        f"{path}:1: 'messages' must be a list of objects with 'role' and 'content'"
    )
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": 5}], "ideal": "x"}])
    assert (
        usage_error(load_dataset, path) == f"{path}:1: message content in 'messages' must be text, got number"
    )


def test_non_object_items_in_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[1, 2]", encoding="utf-8")
    assert usage_error(load_dataset, path) == f"{path}[0]: expected a JSON object, got number"


def test_jsonl_content_in_a_json_named_file(tmp_path):
    path = write_jsonl(tmp_path / "d.json", [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}])
    assert [e.input for e in load_dataset(path)] == ["a", "c"]


def test_empty_input_and_no_user_message(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "  ", "output": "x"}])
    assert usage_error(load_dataset, path) == f"{path}:1: input field 'input' is empty"
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"messages": [{"role": "system", "content": "S"}], "ideal": "x"}]
    )
    assert usage_error(load_dataset, path) == f"{path}:1: no user message in 'messages'"


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_dataset(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_text(content, encoding="utf-8")
    assert usage_error(load_dataset, path) == f"{path}: empty dataset (no records)"


def test_empty_json_array_and_header_only_csv(tmp_path):
    array = tmp_path / "d.json"
    array.write_text("[]", encoding="utf-8")
    assert usage_error(load_dataset, array) == f"{array}: empty dataset (no records)"
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("input,output\n", encoding="utf-8")
    assert usage_error(load_dataset, csv_path) == f"{csv_path}: empty dataset (no records)"


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("input,output\na,b\nc,d,e\n", encoding="utf-8")
    assert usage_error(load_dataset, path) == f"{path}:3: row has 3 values but the header has 2"
    path.write_text("input,output\na,b\n,d\n", encoding="utf-8")
    assert usage_error(load_dataset, path).startswith(f"{path}:3: no input field (looked for input,")


def test_loading_writes_nothing(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "output": "b"}])
    before = sorted(p.name for p in tmp_path.iterdir())
    load_dataset(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# -- ids ---------------------------------------------------------------------------------


def test_ids_are_content_hashes_stable_across_file_order(tmp_path):
    records = [{"input": f"q{i}", "output": f"a{i}"} for i in range(10)]
    forward = load_dataset(write_jsonl(tmp_path / "f.jsonl", records))
    backward = load_dataset(write_jsonl(tmp_path / "b.jsonl", records[::-1]))
    ids_f = {e.input: e.reflex_id for e in forward}
    ids_b = {e.input: e.reflex_id for e in backward}
    assert ids_f == ids_b
    assert len(set(ids_f.values())) == 10
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids_f.values())


def test_content_hash_is_the_documented_sha1():
    import hashlib

    ex = dspy.Example(input="q", output="a").with_inputs("input")
    expected = hashlib.sha1(b'{"input":"q","output":"a"}').hexdigest()[:12]
    assert example_id(ex) == expected
    assert example_id(ex.copy(reflex_id="given")) == "given"


def test_duplicates_get_suffixes_and_ids_are_unique():
    exs = [dspy.Example(input="same", output="x").with_inputs("input") for _ in range(3)]
    exs.append(dspy.Example(input="other", output="y").with_inputs("input"))
    ids = [e.reflex_id for e in assign_ids(exs)]
    base = example_id(exs[0])
    assert ids[:3] == [base, f"{base}#2", f"{base}#3"]
    assert len(set(ids)) == 4


def test_data_ids_used_only_when_unique():
    exs = [
        dspy.Example(id="a", input="1", output="x").with_inputs("input"),
        dspy.Example(id="b", input="2", output="x").with_inputs("input"),
        dspy.Example(id="b", input="3", output="x").with_inputs("input"),
    ]
    ids = [e.reflex_id for e in assign_ids(exs)]
    assert ids[0] == "a"
    assert ids[1] != "b" and ids[2] != "b"  # a duplicated data id is not an identity: fall back to hashes
    assert ids[1:] == [example_id(exs[1]), example_id(exs[2])]


def test_assign_ids_keeps_inputs_is_idempotent_and_copies():
    exs = make_examples(3)
    once = assign_ids(exs)
    assert all("reflex_id" not in e for e in exs)  # originals untouched
    assert [set(e.inputs().keys()) for e in once] == [{"input"}] * 3
    assert [e.reflex_id for e in assign_ids(once)] == [e.reflex_id for e in once]


def test_reflex_id_is_never_an_input():
    ex = dspy.Example(input="q", output="a", reflex_id="r").with_inputs("input", "reflex_id")
    [copy] = assign_ids([ex])
    assert set(copy.inputs().keys()) == {"input"}


# -- splits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "train_ratio", "val_ratio", "sizes"),
    [
        (10, 0.8, 0.1, (7, 1, 2)),
        (100, 0.8, 0.1, (70, 10, 20)),
        (250, 0.8, 0.1, (175, 25, 50)),
        (5, 0.8, 0.1, (3, 1, 1)),
        (3, 0.8, 0.1, (1, 1, 1)),
        (2, 0.8, 0.1, (1, 0, 1)),
        (25, 0.9, 0.1, (19, 3, 3)),  # 2.5 rounds half-up for both test and val (Python's round gives 2)
        (20, 0.7, 0.0, (14, 0, 6)),
        (40, 0.5, 0.25, (10, 10, 20)),
    ],
)
def test_split_sizes(n, train_ratio, val_ratio, sizes):
    splits = split_dataset(make_examples(n), train_ratio=train_ratio, val_ratio=val_ratio)
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    assert splits.sizes() == dict(zip(("train", "val", "test"), sizes, strict=True))
    assert splits.held_out


def test_splits_are_disjoint_and_cover_everything():
    splits = split_dataset(make_examples(57), seed=3)
    ids = splits.ids()
    train, val, test = set(ids["train"]), set(ids["val"]), set(ids["test"])
    assert not (train & val or train & test or val & test)
    assert train | val | test == {example_id(e) for e in assign_ids(make_examples(57))}


def test_splits_are_deterministic_and_independent_of_input_order():
    exs = make_examples(40)
    a = split_dataset(exs, seed=7).ids()
    b = split_dataset(list(reversed(exs)), seed=7).ids()
    assert a == b
    assert split_dataset(exs, seed=8).ids() != a


def test_split_keeps_input_keys_and_ids():
    splits = split_dataset(make_examples(30))
    for ex in splits.train + splits.val + splits.test:
        assert set(ex.inputs().keys()) == {"input"}
        assert ex.reflex_id


def test_train_ratio_one_disables_splitting():
    exs = make_examples(30)
    splits = split_dataset(exs, train_ratio=1.0, val_ratio=0.1)
    assert isinstance(splits, Splits)
    assert splits.val == []
    assert splits.held_out is False
    assert sorted(example_id(e) for e in splits.train) == sorted(example_id(e) for e in splits.test)
    assert len(splits.train) == 30
    assert any("train_ratio=1.0" in w for w in splits.warnings)


def test_explicit_valset_overrides_val_carving():
    exs = make_examples(50)
    valset = [dspy.Example(input=f"v{i}", output="x").with_inputs("input") for i in range(4)]
    splits = split_dataset(exs, val_ratio=0.1, valset=valset)
    assert [e.input for e in splits.val] == ["v0", "v1", "v2", "v3"]
    assert all(e.reflex_id for e in splits.val)
    assert (len(splits.train), len(splits.test)) == (40, 10)  # nothing carved from train for val
    assert not any("validation examples also appear" in w for w in splits.warnings)


def test_overlapping_valset_is_reported():
    exs = make_examples(50)
    splits = split_dataset(exs, valset=exs[:3])
    assert "3 of 3 validation examples also appear in the trainset" in splits.warnings


def test_test_examples_that_repeat_a_train_input_are_reported():
    """A dataset with duplicates: a demo can carry a test example's answer word for word."""
    exs = make_examples(40)
    twins = [dspy.Example(input=e.input, output=e.output, id=f"copy-{i}").with_inputs("input")
             for i, e in enumerate(exs)]
    splits = split_dataset([*exs, *twins])
    seen = {e.input for e in [*splits.train, *splits.val]}
    repeated = sum(e.input in seen for e in splits.test)
    assert repeated > 0 and (f"{repeated} of the {len(splits.test)} test examples repeat the input of a train or "
                             "val example") in " ".join(splits.warnings)
    assert not any("repeat the input" in w for w in split_dataset(exs).warnings)  # no duplicates: nothing said
    assert not any("repeat the input" in w for w in split_dataset([*exs, *twins], train_ratio=1.0).warnings)


def test_small_data_warnings():
    splits = split_dataset(make_examples(30))
    assert "test set of 6 examples is too small for stable scores" in splits.warnings
    assert split_dataset(make_examples(100)).warnings == []
    tiny = split_dataset(make_examples(2))
    assert any("too few for a validation set" in w for w in tiny.warnings)


@pytest.mark.parametrize(
    ("kwargs", "n", "message"),
    [
        ({"train_ratio": 0.0}, 10, "train_ratio must be in (0, 1], got 0.0"),
        ({"train_ratio": 1.5}, 10, "train_ratio must be in (0, 1], got 1.5"),
        ({"val_ratio": -0.1}, 10, "val_ratio must be in [0, 1), got -0.1"),
        (
            {"train_ratio": 0.5, "val_ratio": 0.5},
            10,
            "val_ratio (0.5) must be smaller than train_ratio (0.5)",
        ),
        (
            {"train_ratio": 0.04, "val_ratio": 0.0},
            10,
            "train_ratio=0.04 and val_ratio=0.0 leave no training examples out of 10",
        ),
        ({}, 1, "1 example cannot be split into train and test"),
        ({}, 0, "no examples to split"),
    ],
)
def test_split_errors(kwargs, n, message):
    assert message in usage_error(split_dataset, make_examples(n), **kwargs)


# -- batches -----------------------------------------------------------------------------


def test_sample_batch_all_when_size_zero_or_large():
    train = make_examples(5)
    assert sample_batch(train, 0, seed=1) == train
    assert sample_batch(train, 5, seed=1) == train
    assert sample_batch(train, 50, seed=1) == train


def test_sample_batch_is_seeded_and_distinct():
    train = assign_ids(make_examples(30))
    a = sample_batch(train, 8, seed=42)
    assert len(a) == 8
    assert len({e.reflex_id for e in a}) == 8
    assert a == sample_batch(train, 8, seed=42)
    assert [e.reflex_id for e in a] != [e.reflex_id for e in sample_batch(train, 8, seed=43)]


def test_sample_batch_rejects_negative_size():
    assert usage_error(sample_batch, make_examples(3), -1, seed=0) == "batch size must be >= 0, got -1"
