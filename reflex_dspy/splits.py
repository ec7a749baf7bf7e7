"""Seeded train / val / test splits and mini-batches.

Splits are computed from id-sorted examples (`reflex_dspy.data.example_id`): reordering a file
must not change which examples are held out. Problems are returned as warnings, not printed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dspy

from reflex_dspy.data import assign_ids, example_id, input_text, read_json_file
from reflex_dspy.errors import UsageError

SMALL_TEST_SET = 20


@dataclass
class Splits:
    """train / val / test lists of examples, and whether test is disjoint from train.

    `warnings` are for the caller to show (we never print): small test sets, no val set, or
    no held-out data at all.
    """

    train: list[dspy.Example]
    val: list[dspy.Example]
    test: list[dspy.Example]
    held_out: bool
    warnings: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def ids(self) -> dict[str, list[str]]:
        """Example ids per split: what a record of the run needs to reproduce it."""
        parts = {"train": self.train, "val": self.val, "test": self.test}
        return {name: [example_id(ex) for ex in part] for name, part in parts.items()}


def _round_half_up(x: float) -> int:
    """round() for counts: half-up (Python rounds 2.5 to 2), with slack for float noise like 2.4999999."""
    return math.floor(x + 0.5 + 1e-9)


def split_dataset(
    examples: Sequence[dspy.Example],
    *,
    train_ratio: float = 0.8,
    val_ratio: float = 0.1,
    seed: int = 42,
    valset: Sequence[dspy.Example] | None = None,
    pinned: Mapping[str, Sequence[str]] | None = None,
) -> Splits:
    """Deterministic train / val / test split of `examples` (README, "How a run works", step 1).

    test = round((1 - train_ratio) * n), at least 1; val = round(val_ratio * n), at least 1
    when val_ratio > 0 and at least two examples remain, carved from the training portion;
    train = the rest. Examples are sorted by id before the seeded shuffle, so the split
    depends on content and seed, never on file order. `train_ratio=1.0` disables splitting
    (train = test = everything). An explicit `valset` replaces the carved val set. `pinned`
    (a splits file, `load_splits_file`) names the ids of each split instead: ratios and seed
    are then not used.
    """
    if pinned is not None:
        return _pinned_splits(assign_ids(examples), pinned)
    if not 0.0 < train_ratio <= 1.0:
        raise UsageError(f"train_ratio must be in (0, 1], got {train_ratio}")
    if not 0.0 <= val_ratio < 1.0:
        raise UsageError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if train_ratio < 1.0 and valset is None and val_ratio >= train_ratio:
        raise UsageError(
            f"val_ratio ({val_ratio}) must be smaller than train_ratio ({train_ratio}): "
            "validation is carved out of the training portion"
        )
    pool = assign_ids(examples)
    n = len(pool)
    if n == 0:
        raise UsageError("no examples to split: the dataset is empty")
    explicit_val = assign_ids(valset) if valset is not None else None
    warnings: list[str] = []

    pool.sort(key=example_id)
    random.Random(seed).shuffle(pool)

    if train_ratio == 1.0:
        train, val, test, held_out = pool, [], list(pool), False
        warnings.append(
            "train_ratio=1.0: no held-out test set; final scores are measured on the training data"
        )
    else:
        if n < 2:
            raise UsageError("1 example cannot be split into train and test: add data or use train_ratio=1.0")
        n_test = max(1, _round_half_up((1.0 - train_ratio) * n))
        n_val = 0
        if explicit_val is None and val_ratio > 0:
            if n - n_test >= 2:
                n_val = max(1, _round_half_up(val_ratio * n))
            else:
                warnings.append(
                    f"val_ratio={val_ratio} but {n} examples are too few for a validation set; "
                    "candidates will be selected on train scores"
                )
        n_train = n - n_test - n_val
        if n_train < 1:
            raise UsageError(
                f"train_ratio={train_ratio} and val_ratio={val_ratio} leave no training examples out of {n}"
            )
        test, val, train = pool[:n_test], pool[n_test : n_test + n_val], pool[n_test + n_val :]
        held_out = True

    if explicit_val is not None:
        val = explicit_val
        known = {example_id(ex) for ex in pool}
        overlap = sum(example_id(ex) in known for ex in val)
        if overlap:
            warnings.append(f"{overlap} of {len(val)} validation examples also appear in the trainset")
    if len(test) < SMALL_TEST_SET:
        warnings.append(f"test set of {len(test)} examples is too small for stable scores")
    if held_out:
        warnings += repeated_inputs(test, [*train, *val])
    return Splits(train=train, val=val, test=test, held_out=held_out, warnings=warnings)


def repeated_inputs(test: Sequence[dspy.Example], seen: Sequence[dspy.Example]) -> list[str]:
    """A warning when test examples repeat the input of a train or val example (a dataset with
    duplicates): a demo can then carry the test answer word for word, and the held-out score
    flatters the run. Said, not fixed: which copy is the test one is the user's call."""
    def key(example: dspy.Example) -> tuple[tuple[str, str], ...] | None:
        try:
            return tuple(sorted(input_text(example).items()))
        except ValueError:  # no input fields set: refused later, with its own message
            return None

    known = {key(ex) for ex in seen} - {None}
    repeated = sum(key(ex) in known for ex in test)
    if not repeated:
        return []
    return [f"{repeated} of the {len(test)} test examples repeat the input of a train or val example: a demo can "
            "carry its answer, so the held-out score may flatter the run (drop the duplicates, or pin the splits "
            "with a splits file)"]


def sample_batch(train: Sequence[dspy.Example], size: int, seed: int) -> list[dspy.Example]:
    """A seeded mini-batch of `size` examples; `size` 0 or ≥ len(train) means all of train, in order."""
    if size < 0:
        raise UsageError(f"batch size must be >= 0, got {size}")
    if size == 0 or size >= len(train):
        return list(train)
    return random.Random(seed).sample(list(train), size)


SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test", "holdout": "test"}


def load_splits_file(path: str | Path) -> dict[str, list[str]]:
    """`{"train": [ids], "val": [ids], "test": [ids]}` from a JSON file ("holdout" = "test").

    Ids are the dataset's `id` field (or the ids `reflex-dspy show` lists). Wrong shapes are
    one-line errors naming the file and the key; an id pinned to two splits is refused.
    """
    path = Path(path)
    data = read_json_file(path, "splits")
    if not isinstance(data, dict):
        raise UsageError(f'{path}: expected an object like {{"train": [...], "val": [...], "test": [...]}}')
    splits: dict[str, list[str]] = {}
    for key, ids in data.items():
        name = SPLIT_NAMES.get(key)
        if name is None:
            raise UsageError(f"{path}: unknown split {key!r} (expected train, val, test or holdout)")
        if name in splits:
            raise UsageError(f"{path}: split {name!r} given twice")
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise UsageError(f"{path}: {key!r} must be a list of example ids")
        splits[name] = [str(i) for i in ids]
    for required in ("train", "test"):
        if not splits.get(required):
            raise UsageError(f"{path}: the {required!r} split is missing or empty")
    seen: dict[str, str] = {}
    for name, ids in splits.items():
        for i in ids:
            if i in seen:
                raise UsageError(f"{path}: example {i!r} is pinned to both {seen[i]!r} and {name!r}")
            seen[i] = name
    return splits


def _pinned_splits(pool: list[dspy.Example], pinned: Mapping[str, Sequence[str]]) -> Splits:
    by_id = {example_id(ex): ex for ex in pool}
    parts: dict[str, list[dspy.Example]] = {}
    for name in ("train", "val", "test"):
        unknown = [i for i in pinned.get(name, ()) if i not in by_id]
        if unknown:
            raise UsageError(
                f"splits file: {len(unknown)} {name} id(s) not in the dataset, e.g. {unknown[0]!r}"
            )
        parts[name] = [by_id[i] for i in pinned.get(name, ())]
    warnings = []
    unlisted = len(pool) - sum(len(p) for p in parts.values())
    if unlisted:
        warnings.append(f"{unlisted} dataset examples are in no split of the splits file and are not used")
    if len(parts["test"]) < SMALL_TEST_SET:
        warnings.append(f"test set of {len(parts['test'])} examples is too small for stable scores")
    warnings += repeated_inputs(parts["test"], [*parts["train"], *parts["val"]])
    return Splits(train=parts["train"], val=parts["val"], test=parts["test"], held_out=True, warnings=warnings)
