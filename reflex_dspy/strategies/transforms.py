"""The structural strategy's catalogue: deterministic, content-preserving layouts of instructions.

Instructions are parsed into units (sentences, list items, code blocks), each classified as
role, task, constraint, output format or example, and re-laid out. Only structure changes:
every word of the input survives (`lost_words` checks it), scaffolding such as headings or
tags may be added. A parsed text remembers its layout, so transforms compose: `xml_tags` then
`constraint_emphasis` gives XML with emphasised constraints, and re-applying a transform to
its own output changes nothing (the strategy then has no variant to try for it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

KINDS = ("role", "task", "constraint", "format", "example")
TITLES = {"role": "Role", "task": "Task", "constraint": "Constraints", "format": "Output format",
          "example": "Examples", "anchor": "Input"}
TAGS = {"role": "role", "task": "task", "constraint": "constraints", "format": "output_format",
        "example": "examples", "anchor": "input"}
LABELS = {"role": "Role", "task": "Task", "constraint": "Rules", "format": "Format", "example": "Examples",
          "anchor": "Input"}
STEPS = {"task": "Work out what is asked:", "constraint": "Check every rule:", "format": "Write the answer:"}
STEPS_HEADER = "Work through these steps in order:"
EXAMPLES_HEADER = "Examples:"
IMPORTANT = "IMPORTANT: "

_ROLE = re.compile(r"^(you are|you're|act as|as an? |your role|imagine you)", re.I)
_EXAMPLE = re.compile(r"^(for example|for instance|e\.g\.|examples?\b)", re.I)
_CONSTRAINT_START = re.compile(r"^(never|do not|don't|always|only|avoid|you must|you should not)\b", re.I)
_FORMAT = re.compile(
    r"^(answer|respond|reply|return|output|give)\b|\b(answer with|respond with|reply with|output|format|json|"
    r"labels?|one of|in the form|yyyy-mm-dd|keys?)\b", re.I)
_CONSTRAINT = re.compile(
    r"\b(must|never|only|always|do not|don't|cannot|can't|should not|avoid|no more than|at most|at least|"
    r"exactly|without|not allowed|required)\b", re.I)
_EMPHASIS_WORDS = re.compile(r"\b(must|never|only|always|not)\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'`(<\[*])")
_LIST_ITEM = re.compile(r"^(\s*(?:[-*•]|\d+[.)])\s+)(.*)$")
_HEADING = re.compile(r"^(#{1,6}\s+)(.*)$")
_ANCHOR = re.compile(r"The input(?: \([^()\n]*\))? comes after these instructions\. Read it in full, then give "
                     r"the answer(?: \([^()\n]*\))? in the format described above\.")
_TRAILING_ANCHOR = re.compile(r"(?:^|\s)(" + _ANCHOR.pattern + r")\s*$")


@dataclass(frozen=True)
class Unit:
    """One sentence, list item or verbatim block; `para` and `prefix` keep its place in prose."""

    kind: str
    text: str
    para: int = 0
    prefix: str = ""  # a list marker or heading mark, restored only by the prose layout


@dataclass(frozen=True)
class Layout:
    """Instructions as classified units plus how to lay them out."""

    units: tuple[Unit, ...]
    style: str = "prose"  # prose | flat | grouped | markdown | xml | rtf | steps
    emphasis: bool = False  # constraints last, each marked IMPORTANT
    anchor: str | None = None  # the input-anchoring sentence, rendered last


# -- content ---------------------------------------------------------------------------------
def content_words(text: str) -> Counter[str]:
    """The words of `text` (lower-cased, with multiplicity), ignoring list numbering and markup."""
    lines = (_LIST_ITEM.sub(r"\2", line) for line in text.splitlines())
    return Counter(w.lower() for line in lines for w in re.findall(r"\w+", line))


def content_text(text: str) -> str:
    """`text` without the scaffolding our layouts add (headings, tags, labels, IMPORTANT, the anchor):
    what a later layout must keep, whichever layout the text has now."""
    return "\n".join(u.text for u in parse(text).units)


def lost_words(before: str, after: str) -> list[str]:
    """Words of `before` that `after` no longer contains as often (empty: content preserved)."""
    return sorted((content_words(before) - content_words(after)).elements())


# -- parsing ---------------------------------------------------------------------------------
def classify(text: str) -> str:
    """The kind of one unit, from its wording (a heuristic: the layouts only group by it)."""
    if text.startswith("```"):
        return "example"
    if _ROLE.match(text):
        return "role"
    if _EXAMPLE.match(text):
        return "example"
    if _CONSTRAINT_START.match(text):
        return "constraint"
    if _FORMAT.search(text):
        return "format"
    return "constraint" if _CONSTRAINT.search(text) else "task"


def _unit(text: str, para: int = 0, prefix: str = "", kind: str | None = None) -> tuple[Unit, bool]:
    """A unit, and whether it carried the emphasis marker (then it is a constraint)."""
    emphasised = text.startswith(IMPORTANT)
    if emphasised:
        text, kind = text[len(IMPORTANT):], "constraint"
    return Unit(kind or classify(text), text, para, prefix), emphasised


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(" ".join(text.split())) if s]


def _paragraphs(text: str) -> list[list[str]]:
    """Blank-line separated paragraphs as lists of lines; a fenced code block is a paragraph of its own."""
    paras: list[list[str]] = [[]]
    for line in _fenced_lines(text.splitlines()) or []:
        if line.lstrip().startswith("```"):
            paras += [[line], []]
        elif line.strip():
            paras[-1].append(line)
        else:
            paras.append([])
    return [p for p in paras if p]


def _parse_prose(text: str) -> Layout:
    anchor = None
    if match := _TRAILING_ANCHOR.search(text):
        anchor, text = match.group(1), text[: match.start()]
    units: list[Unit] = []
    emphasis = False
    for n, lines in enumerate(_paragraphs(text)):
        if lines[0].lstrip().startswith("```"):  # a fenced block, verbatim
            units.append(Unit("example", lines[0], n))
            continue
        structured = any(_LIST_ITEM.match(x) or _HEADING.match(x) for x in lines)
        pieces = []
        for line in lines if structured else [" ".join(lines)]:
            marker = _LIST_ITEM.match(line) or _HEADING.match(line)
            if marker:
                pieces.append((marker.group(2).strip(), marker.group(1)))
            else:
                pieces += [(s, "") for s in (_sentences(line) if not structured else [line.strip()])]
        for piece, prefix in pieces:
            unit, marked = _unit(piece, n, prefix)
            units.append(unit)
            emphasis |= marked
    if units and not any(u.kind == "task" for u in units):
        # Every instruction asks for something: the first non-role unit states the task.
        i = next((i for i, u in enumerate(units) if u.kind != "role"), None)
        if i is not None and not units[i].text.startswith("```"):
            units[i] = replace(units[i], kind="task")
    return Layout(tuple(units), "prose", emphasis, anchor)


def _fenced_lines(lines: Sequence[str], marker: str = "") -> list[str] | None:
    """Lines as units, except that a fenced code block (``` ... ```) stays one unit.

    With a `marker` (a bullet), every line outside a code block must start with it (it is
    removed); None when one does not.
    """
    units: list[str] = []
    open_fence = False
    for line in lines:
        if open_fence:
            units[-1] += "\n" + line
            open_fence = not line.strip().startswith("```")
            continue
        if not line.startswith(marker):
            return None
        units.append(line[len(marker):])
        stripped = units[-1].strip()
        open_fence = stripped.startswith("```") and not (len(stripped) > 3 and stripped.endswith("```"))
    return units


def _body_units(body: str) -> list[str]:
    """A section body as units: line by line when it holds lines or code, else sentence by sentence."""
    return (_fenced_lines(body.split("\n")) or []) if "\n" in body else _sentences(body)


def _blocks(text: str) -> list[str]:
    return [b for b in re.split(r"\n\n+", text.strip()) if b]


def _sectioned(blocks: list[tuple[str, list[str]]], style: str, split: bool) -> Layout | None:
    """A layout from (kind, texts) sections; `split` re-splits each text into units (`_body_units`)."""
    units: list[Unit] = []
    emphasis, anchor = False, None
    for kind, texts in blocks:
        if kind == "anchor":
            anchor = " ".join(texts)
            continue
        for text in texts:
            for piece in _body_units(text) if split else [text]:
                unit, marked = _unit(piece, kind=kind)
                units.append(unit)
                emphasis |= marked
    return Layout(tuple(units), style, emphasis, anchor) if units else None


def _parse_markdown(text: str) -> Layout | None:
    kinds = {v: k for k, v in TITLES.items()}
    sections = []
    for block in _blocks(text):
        head, _, body = block.partition("\n")
        kind = kinds.get(head.removeprefix("## ")) if head.startswith("## ") else None
        items = _fenced_lines(body.split("\n"), marker="- ")
        if kind is None or items is None:
            return None
        sections.append((kind, items))
    return _sectioned(sections, "markdown", split=False)


def _parse_xml(text: str) -> Layout | None:
    kinds = {v: k for k, v in TAGS.items()}
    sections = []
    for block in _blocks(text):
        match = re.fullmatch(r"<(\w+)>\n(.*)\n</\1>", block, re.S)
        if not match or match.group(1) not in kinds:
            return None
        sections.append((kinds[match.group(1)], _fenced_lines(match.group(2).split("\n")) or []))
    return _sectioned(sections, "xml", split=False)


def _parse_rtf(text: str) -> Layout | None:
    kinds = {v: k for k, v in LABELS.items()}
    sections = []
    for block in _blocks(text):
        label, sep, body = block.partition(": ")
        if not sep or label not in kinds:
            return None
        sections.append((kinds[label], [body]))
    return _sectioned(sections, "rtf", split=True)


def _parse_steps(text: str) -> Layout | None:
    kinds = {v: k for k, v in STEPS.items()}
    blocks = _blocks(text)
    sections: list[tuple[str, list[str]]] = []
    if blocks and _ANCHOR.fullmatch(blocks[-1]):
        sections.append(("anchor", [blocks.pop()]))
    if blocks and blocks[-1].startswith(EXAMPLES_HEADER + "\n"):
        sections.append(("example", [blocks.pop().removeprefix(EXAMPLES_HEADER + "\n")]))
    if not blocks or not blocks[-1].startswith(STEPS_HEADER + "\n") or len(blocks) > 2:
        return None
    if len(blocks) == 2:
        sections.append(("role", [blocks[0]]))
    for n, line in enumerate(blocks[-1].split("\n")[1:], 1):
        label = next((lbl for lbl in kinds if line.startswith(f"{n}. {lbl} ")), None)
        if label is None:
            return None
        sections.append((kinds[label], [line[len(f"{n}. {label} "):]]))
    return _sectioned(sections, "steps", split=True)


def parse(text: str) -> Layout:
    """The layout of `text`: one of ours when re-rendering it reproduces `text` exactly, else prose."""
    text = text.strip()
    base = _parse_prose(text)
    tries = (_parse_markdown(text), _parse_xml(text), _parse_rtf(text), _parse_steps(text),
             replace(base, style="grouped"), replace(base, style="flat"))
    return next((lay for lay in tries if lay is not None and lay.units and render(lay) == text), base)


# -- rendering -------------------------------------------------------------------------------
def emphasise(text: str) -> str:
    """A constraint marked IMPORTANT, its modal words upper-cased."""
    return IMPORTANT + _EMPHASIS_WORDS.sub(lambda m: m.group(0).upper(), text)


def _texts(layout: Layout, units: Sequence[Unit]) -> list[str]:
    return [emphasise(u.text) if layout.emphasis and u.kind == "constraint" else u.text for u in units]


def _sections(layout: Layout) -> list[tuple[str, list[str]]]:
    """Non-empty (kind, texts) in task → constraints → format order (constraints last when emphasised)."""
    order = [k for k in KINDS if not (layout.emphasis and k == "constraint")]
    if layout.emphasis:
        order.append("constraint")
    sections = [(k, _texts(layout, [u for u in layout.units if u.kind == k])) for k in order]
    return [(k, texts) for k, texts in sections if texts]


def _join(texts: Sequence[str]) -> str:
    return "\n".join(texts) if any("\n" in t for t in texts) else " ".join(texts)


def _in_order(layout: Layout) -> list[Unit]:
    """Units in their own order, constraints moved last when emphasised."""
    if not layout.emphasis:
        return list(layout.units)
    return [u for u in layout.units if u.kind != "constraint"] + [u for u in layout.units if u.kind == "constraint"]


def _render_prose(layout: Layout) -> list[str]:
    keep = [u for u in layout.units if not (layout.emphasis and u.kind == "constraint")]
    paras: dict[int, list[Unit]] = {}
    for u in keep:
        paras.setdefault(u.para, []).append(u)
    out = []
    for units in paras.values():
        lines = any(u.prefix or "\n" in u.text for u in units)
        out.append(("\n" if lines else " ").join(u.prefix + u.text for u in units))
    emphasised = _texts(layout, [u for u in layout.units if layout.emphasis and u.kind == "constraint"])
    if emphasised:
        out.append("\n".join(emphasised))
    return out


def _render_flat(layout: Layout) -> str:
    """One plain paragraph; only code blocks (which cannot be flattened) stand apart."""
    runs: list[list[str]] = [[]]
    for text in [*_texts(layout, _in_order(layout)), *([layout.anchor] if layout.anchor else [])]:
        if "\n" in text:
            runs += [[text], []]
        else:
            runs[-1].append(text)
    return "\n\n".join(" ".join(run) for run in runs if run)


def render(layout: Layout) -> str:
    """The instructions text of `layout`."""
    style, anchor = layout.style, layout.anchor
    sections = _sections(layout)
    if style == "flat":
        return _render_flat(layout)
    if style == "prose":
        blocks = _render_prose(layout)
    elif style == "grouped":
        blocks = [_join(texts) for _, texts in sections]
    elif style == "markdown":
        blocks = [f"## {TITLES[k]}\n" + "\n".join(f"- {t}" for t in texts) for k, texts in sections]
    elif style == "xml":
        blocks = [f"<{TAGS[k]}>\n" + "\n".join(texts) + f"\n</{TAGS[k]}>" for k, texts in sections]
    elif style == "rtf":
        blocks = [f"{LABELS[k]}: {_join(texts)}" for k, texts in sections]
    elif style == "steps":
        blocks = [_join(texts) for k, texts in sections if k == "role"]
        steps = [f"{n}. {STEPS[k]} {' '.join(texts)}" for n, (k, texts) in enumerate(
            [s for s in sections if s[0] in STEPS], 1)]
        blocks.append("\n".join([STEPS_HEADER, *steps]))
        blocks += [f"{EXAMPLES_HEADER}\n" + "\n".join(texts) for k, texts in sections if k == "example"]
    else:
        raise ValueError(f"unknown layout style {style!r}")
    if anchor:
        blocks.append({"markdown": f"## {TITLES['anchor']}\n- {anchor}",
                       "xml": f"<{TAGS['anchor']}>\n{anchor}\n</{TAGS['anchor']}>",
                       "rtf": f"{LABELS['anchor']}: {anchor}"}.get(style, anchor))
    return "\n\n".join(blocks)


# -- the catalogue -----------------------------------------------------------------------------
def anchor_sentence(inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> str:
    """Where the input is and what follows it; generic field names ("input") are left unsaid."""
    def named(names: Sequence[str], generic: str) -> str:
        return f" ({', '.join(names)})" if names and list(names) != [generic] else ""

    return (f"The input{named(inputs, 'input')} comes after these instructions. Read it in full, then give "
            f"the answer{named(outputs, 'output')} in the format described above.")


Fields = tuple[Sequence[str], Sequence[str]]
TRANSFORMS: dict[str, Callable[[Layout, Fields], Layout]] = {
    "section_reorder": lambda lay, io: replace(lay, style="grouped"),
    "markdown_structure": lambda lay, io: replace(lay, style="markdown"),
    "minimal_flat": lambda lay, io: replace(lay, style="flat"),
    "xml_tags": lambda lay, io: replace(lay, style="xml"),
    "constraint_emphasis": lambda lay, io: replace(lay, emphasis=True),
    "task_decomposition": lambda lay, io: replace(lay, style="steps"),
    "role_task_format": lambda lay, io: replace(lay, style="rtf"),
    "input_anchored": lambda lay, io: replace(lay, anchor=lay.anchor or anchor_sentence(*io)),
}
CATALOGUE = tuple(TRANSFORMS)


def transform(name: str, text: str, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> str:
    """`text` re-laid out by the catalogue transform `name` (unchanged when it already has that layout)."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r} (known: {', '.join(CATALOGUE)})")
    layout = parse(text)
    if not layout.units:
        return text
    return render(TRANSFORMS[name](layout, (inputs, outputs)))
