"""Prompt syntax, exactly as A1111 v1.10.1 reads it (prompt spec §2–§6).

Pure string functions, no model:

* :func:`merge_prompts` / :func:`apply_styles` — saved styles (§2);
* :func:`parse_extra_networks` — ``<lora:…>`` / ``<hypernet:…>`` tags, removed from the text (§3);
* :func:`get_multicond_prompt_list` — composable ``AND`` with weights (§4);
* :func:`get_learned_conditioning_prompt_schedules` — prompt editing ``[a:b:when]`` and alternation
  ``[a|b]`` (§5);
* :func:`parse_prompt_attention` — emphasis ``(x)``, ``[x]``, ``(x:1.3)`` and ``BREAK`` (§6).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache

import lark

# ---------------------------------------------------------------------------------------------
# §5 prompt editing and alternation.
# The grammar is A1111's, rule for rule: which parse lark's Earley parser picks for ambiguous
# prompts depends on the exact rule order, so it must not be "simplified".
_SCHEDULE_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@cache
def _schedule_parser() -> lark.Lark:
    return lark.Lark(_SCHEDULE_GRAMMAR)


# What one prompt may hold. Earley parsing of the editing syntax grows about cubically with the number of
# "[" constructs (measured: 32 → 0.7 s, 64 → 2.3 s, 128 → 15 s, 256 → 96 s), and A1111's emphasis
# weighting is quadratic in unclosed brackets; these bounds keep one prompt's parsing to seconds. Each
# AND part is a row of every UNet call (5,000 took 34 s and 2.4 GB for a 2-step 64² job), and each network
# tag a file lookup and an application (a network named twice is applied twice, as A1111).
MAX_PROMPT_CHARS = 32_768
MAX_PROMPT_EDITS = 64  # "[" characters: prompt editing and alternation
MAX_PROMPT_BRACKETS = 512  # "(" characters: emphasis
MAX_PROMPT_PARTS = 64  # sub-prompts joined by AND
MAX_PROMPT_NETWORKS = 64  # <lora:…>-style tags


def count_prompt_parts(text: str) -> int:
    """The sub-prompts ``AND`` makes of ``text`` (1 without AND): what each UNet call evaluates for it."""
    return len(_RE_AND.findall(text)) + 1


def check_prompt_size(name: str, text: str) -> None:
    """``ValueError`` naming ``name`` when ``text`` exceeds what one prompt may hold (see the limits above)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"{name} is {len(text)} characters long; at most {MAX_PROMPT_CHARS} are accepted")
    edits, brackets = text.count("["), text.count("(")
    if edits > MAX_PROMPT_EDITS:
        raise ValueError(f"{name} has {edits} '[' (prompt editing / alternation); at most {MAX_PROMPT_EDITS} are "
                         "accepted (escape literal brackets as \\[)")
    if brackets > MAX_PROMPT_BRACKETS:
        raise ValueError(f"{name} has {brackets} '(' (emphasis); at most {MAX_PROMPT_BRACKETS} are accepted")
    parts = count_prompt_parts(text)
    if parts > MAX_PROMPT_PARTS:
        raise ValueError(f"{name} has {parts} sub-prompts joined by AND; at most {MAX_PROMPT_PARTS} are accepted")
    tags = sum(1 for _ in extra_network_tags(text))
    if tags > MAX_PROMPT_NETWORKS:
        raise ValueError(f"{name} has {tags} extra-network tags (<lora:…>); at most {MAX_PROMPT_NETWORKS} are "
                         "accepted")


def get_learned_conditioning_prompt_schedules(
    prompts: Sequence[str],
    base_steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[list]]:
    """For each prompt, the list of ``[end_at_step, text]`` its editing syntax produces.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:3]"], 10)
    [[[3, 'a b'], [10, 'a c']]]

    A prompt that does not parse is used verbatim for every step: ``[[steps, prompt]]``.
    """
    if hires_steps is None or use_old_scheduling:
        steps, int_offset, flt_offset = base_steps, 0, 0.0
    else:
        steps, int_offset, flt_offset = hires_steps, base_steps, 1.0

    by_text = {p: _schedule_of(p, steps, int_offset, flt_offset, use_old_scheduling) for p in set(prompts)}
    return [[[end, text] for end, text in by_text[p]] for p in prompts]


@lru_cache(maxsize=256)
def _schedule_of(prompt: str, steps: int, int_offset: int, flt_offset: float, old: bool) -> tuple[tuple[int, str], ...]:
    """One prompt's schedule. Cached: Earley parsing costs seconds for long prompts with editing syntax (and
    allocates enough to trigger full garbage collections), and clients send the same prompt job after job."""
    if not _may_schedule(prompt):  # no editing or alternation can parse: the text is the schedule (no Earley cost)
        return ((steps, prompt),)
    try:
        tree = _schedule_parser().parse(prompt)
    except lark.exceptions.LarkError:
        return ((steps, prompt),)
    ends = _resolve_steps(tree, steps, int_offset, flt_offset, old)
    return tuple((end, "".join(_render(tree, end))) for end in ends)


def _may_schedule(prompt: str) -> bool:
    """Whether any parse could hold a ``[a:b:when]`` or ``[a|b]``: only when an unescaped ``:`` or ``|`` stands
    inside an unescaped ``[`` … ``]``. (Such a node's brackets enclose balanced brackets, so at its ``:``/``|`` the
    count of open ``[`` — never below zero — is at least one.) Otherwise every parse is plain text and emphasis,
    whose tokens render the prompt unchanged, and a parse error also gives the prompt: Earley parsing, which
    costs seconds for long prompts, is skipped."""
    depth, escaped = 0, False
    for char in prompt:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
        elif depth and char in ":|":
            return True
    return False


def _resolve_steps(tree: lark.Tree, steps: int, int_offset: int, flt_offset: float, old: bool) -> list[int]:
    """Turn every ``scheduled`` node's NUMBER into an integer step (in place); the sorted step ends."""
    ends = {steps}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            text = str(node.children[-2])
            v = float(text)
            if old:
                v = v * steps if v < 1 else v
            elif "." in text:
                v = (v - flt_offset) * steps
            else:
                v = v - int_offset
            when = min(steps, int(v))
            node.children[-2] = when
            if when >= 1:
                ends.add(when)
        elif node.data == "alternate":
            ends.update(range(1, steps + 1))
    return sorted(ends)


def _render(node, step: int) -> Iterable[str]:
    """The text of a parsed prompt at ``step`` (1-based end of the schedule entry)."""
    if node is None:
        return
    if isinstance(node, lark.Token):
        yield str(node)
        return
    if node.data == "scheduled":
        before, after, _, when, _ = node.children
        yield from _render(before if step <= when else after, step)
    elif node.data == "alternate":
        options = node.children
        yield from _render(options[(step - 1) % len(options)], step)
    else:
        for child in node.children:
            yield from _render(child, step)


# ---------------------------------------------------------------------------------------------
# §4 composable prompts
_RE_AND = re.compile(r"\bAND\b")
_RE_NUMBER = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


def split_weight(subprompt: str) -> tuple[str, str | None]:
    """``(text, weight)`` as A1111's ``re.search(r"^((?:\\s|.)*?)(?:\\s*:\\s*(NUMBER))?\\s*$", subprompt)`` gives
    them, in linear time: that pattern backtracks quadratically over a long run of whitespace (a 32,000-space
    prompt held the GIL for 5 s, freezing every thread of the server).

    The lazy prefix is as short as the rest allows, and the rest is either whitespace alone or whitespace,
    ``:``, whitespace, a number, whitespace. A number holds no ``:``, so only the last colon can start it.

    >>> split_weight("a cat :1.5 "), split_weight("a: b"), split_weight("x  ")
    (('a cat', '1.5'), ('a: b', None), ('x', None))
    """
    colon = subprompt.rfind(":")
    if colon >= 0 and _RE_NUMBER.fullmatch(subprompt[colon + 1:].strip()):
        return subprompt[:colon].rstrip(), subprompt[colon + 1:].strip()
    return subprompt.rstrip(), None


def get_multicond_prompt_list(prompts: Sequence[str]) -> tuple[list[list[tuple[int, float]]], list[str]]:
    """Split every prompt on ``AND`` into weighted sub-prompts.

    Returns ``(indexes, flat)``: per prompt a list of ``(index into flat, weight)``; ``flat`` holds
    each distinct sub-prompt text once, across the whole batch.

    >>> get_multicond_prompt_list(["a:1.5 AND b :0.5"])
    ([[(0, 1.5), (1, 0.5)]], ['a', ' b'])
    """
    indexes: list[list[tuple[int, float]]] = []
    flat: list[str] = []
    position: dict[str, int] = {}
    for prompt in prompts:
        parts = []
        for subprompt in _RE_AND.split(prompt):
            text, weight = split_weight(subprompt)
            if text not in position:
                position[text] = len(flat)
                flat.append(text)
            parts.append((position[text], float(weight) if weight is not None else 1.0))
        indexes.append(parts)
    return indexes, flat


# ---------------------------------------------------------------------------------------------
# §6 emphasis
_RE_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
    """,
    re.X,
)
_RE_BREAK_WORD = re.compile(r"\bBREAK\b")
ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1


def split_on_break(text: str) -> list[str]:
    """``re.split(r"\\s*\\bBREAK\\b\\s*", text)`` (A1111's ``re_break``), in linear time: that pattern
    backtracks quadratically over a long run of whitespace — in one C call holding the GIL, which froze
    every thread of the server for a 40 KB prompt of spaces.

    >>> split_on_break("a  BREAK b BREAKING BREAK")
    ['a', 'b BREAKING', '']
    """
    parts, start, previous_end, n = [], 0, 0, len(text)
    for m in _RE_BREAK_WORD.finditer(text):
        begin, end = m.start(), m.end()
        while begin > previous_end and text[begin - 1].isspace():
            begin -= 1
        while end < n and text[end].isspace():
            end += 1
        parts.append(text[start:begin])
        start = previous_end = end
    parts.append(text[start:])
    return parts


def parse_prompt_attention(text: str) -> list[list]:
    """Split ``text`` into ``[fragment, weight]`` pairs; ``["BREAK", -1]`` marks a chunk break.

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]

    A malformed weight such as ``(x:1.2.3)`` raises ``ValueError`` (as A1111, which aborts the job).
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in _RE_ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply_range(round_open.pop(), _parse_weight(weight, text))
        elif token == ")" and round_open:
            multiply_range(round_open.pop(), ROUND_BRACKET_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_range(square_open.pop(), SQUARE_BRACKET_MULTIPLIER)
        else:
            for i, part in enumerate(split_on_break(token)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for pos in round_open:
        multiply_range(pos, ROUND_BRACKET_MULTIPLIER)
    for pos in square_open:
        multiply_range(pos, SQUARE_BRACKET_MULTIPLIER)

    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


def _parse_weight(weight: str, text: str) -> float:
    try:
        return float(weight)
    except ValueError:
        raise ValueError(f"prompt: malformed emphasis weight {weight!r} in {text!r}") from None


# ---------------------------------------------------------------------------------------------
# §3 extra-network tags
_RE_NETWORK_NAME = re.compile(r"\w+")


def extra_network_tags(prompt: str) -> Iterator[tuple[int, int, str, str]]:
    """``(start, end, name, items)`` of each tag ``re.finditer(r"<(\\w+):([^>]+)>", prompt)`` finds (A1111's
    ``re_extra_net``), in linear time: that pattern rescans to the next ``>`` from every ``<name:``, which is
    quadratic for a prompt of ``<a:<a:<a:…`` with no ``>``.

    >>> [tag[2:] for tag in extra_network_tags("x <lora:a:1> <b> <c:<d:e>")]
    [('lora', 'a:1'), ('d', 'e')]
    """
    position, n = 0, len(prompt)
    while (start := prompt.find("<", position)) >= 0:
        name = _RE_NETWORK_NAME.match(prompt, start + 1)
        colon = name.end() if name else start + 1
        if name is None or colon >= n or prompt[colon] != ":":
            position = start + 1
            continue
        close = prompt.find(">", colon + 1)
        if close < 0:
            return  # no ">" after here: no tag can end
        if close == colon + 1:  # "<name:>": the items need a character
            position = start + 1
            continue
        yield start, close + 1, name.group(0), prompt[colon + 1:close]
        position = close + 1

@dataclass
class ExtraNetworkParams:
    """One ``<name:items>`` tag: ``items`` split on ``:``; ``key=value`` items also in ``named``."""

    items: list[str] = field(default_factory=list)
    positional: list[str] = field(default_factory=list)
    named: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: list[str]) -> ExtraNetworkParams:
        params = cls(items=items)
        for item in items:
            key_value = item.split("=")
            if len(key_value) == 2:
                params.named[key_value[0]] = key_value[1]
            else:
                params.positional.append(item)
        return params


def parse_extra_networks(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """Remove ``<lora:…>``-style tags from ``prompt``; return the text and the tags by network type.

    >>> parse_extra_networks("a, <lora:x:1>, b")[0]
    'a, , b'
    """
    found: dict[str, list[ExtraNetworkParams]] = {}
    kept, position = [], 0
    for start, end, name, items in extra_network_tags(prompt):
        found.setdefault(name, []).append(ExtraNetworkParams.from_items(items.split(":")))
        kept.append(prompt[position:start])
        position = end
    kept.append(prompt[position:])
    return "".join(kept), found


def parse_extra_networks_batch(prompts: Sequence[str]) -> tuple[list[str], dict[str, list[ExtraNetworkParams]]]:
    """Strip tags from every prompt; only the first prompt's tags count for the batch (§3.1)."""
    texts, networks = [], {}
    for i, prompt in enumerate(prompts):
        text, found = parse_extra_networks(prompt)
        texts.append(text)
        if i == 0:
            networks = found
    return texts, networks


# ---------------------------------------------------------------------------------------------
# §2 styles
def merge_prompts(style_text: str, prompt: str) -> str:
    """Apply one style's text to a prompt: ``{prompt}`` placeholder, else append with ``", "``."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    parts = [p for p in (prompt.strip(), style_text.strip()) if p]
    return ", ".join(parts)


def apply_styles(prompt: str, style_texts: Iterable[str]) -> str:
    """Apply several styles' texts in order, each to the result of the previous one."""
    for style_text in style_texts:
        prompt = merge_prompts(style_text, prompt)
    return prompt
