"""Every string-level test vector of the prompt spec §13.1, §13.2, §13.4 and §13.7 (all EXACT)."""

import re

import lark
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retouch.prompt_parser import (
    apply_styles,
    extra_network_tags,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    merge_prompts,
    parse_extra_networks,
    parse_extra_networks_batch,
    parse_prompt_attention,
    split_weight,
)

ATTENTION = [
    # A1–A6 (A1111 docstring)
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
    # A7–A21
    ("", [["", 1.0]]),
    ("()", [["", 1.0]]),
    ("[a]", [["a", 0.9090909090909091]]),
    ("((a))", [["a", 1.2100000000000002]]),
    ("[[a]]", [["a", 0.8264462809917354]]),
    ("([a])", [["a", 1.0]]),
    ("(a: 1.5 )", [["a", 1.5]]),
    ("(a:-1)", [["a", -1.0]]),
    ("(a:.5)", [["a", 0.5]]),
    ("(a:5.)", [["a", 5.0]]),
    ("(a:+2)", [["a", 2.0]]),
    ("(a:0)", [["a", 0.0]]),
    ("a:1.5)", [["a:1.5)", 1.0]]),
    ("a]", [["a]", 1.0]]),
    ("[a", [["a", 0.9090909090909091]]),
    ("(a [b", [["a ", 1.1], ["b", 1.0]]),
    ("((a)", [["a", 1.2100000000000002]]),
    ("(a (b:2))", [["a ", 1.1], ["b", 2.2]]),
    ("((a:2):3)", [["a", 6.0]]),
    ("((a:1.5) b)", [["a", 1.6500000000000001], [" b", 1.1]]),
    ("(a:2) (b:2)", [["a", 2.0], [" ", 1.0], ["b", 2.0]]),
    ("a (b:1) c", [["a b c", 1.0]]),
    ("(a:1.1)(b)", [["ab", 1.1]]),
    ("a\\b", [["ab", 1.0]]),
    ("a\\\\b", [["a\\b", 1.0]]),
    ("\\:", [[":", 1.0]]),
    ("(a\\)", [["a)", 1.1]]),
    ("(a:1.2:3)", [["a:1.2", 3.0]]),
    ("(a:1e3)", [["a:1e3", 1.1]]),
    ("(a:-)", [["a:-", 1.1]]),
    ("(a][b)", [["a]", 1.1], ["b", 1.0]]),
    ("[a:b:5]", [["a:b:5", 0.9090909090909091]]),
    ("(a|b)", [["a|b", 1.1]]),
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("BREAK a", [["", 1.0], ["BREAK", -1], ["a", 1.0]]),
    ("BREAK", [["", 1.0], ["BREAK", -1], ["", 1.0]]),
    ("a BREAK BREAK b", [["a", 1.0], ["BREAK", -1], ["", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("x,BREAK,y", [["x,", 1.0], ["BREAK", -1], [",y", 1.0]]),
    ("a\nBREAK\nb", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("a BREAKfast", [["a BREAKfast", 1.0]]),
    ("a break b", [["a break b", 1.0]]),
    ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),
    ("a  (  b  )  c", [["a  ", 1.0], ["  b  ", 1.1], ["  c", 1.0]]),
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION)
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == expected


@pytest.mark.parametrize("text", ["(a:1.2.3)", "(a:.)", "(a:1..2)"])
def test_parse_prompt_attention_malformed_weight_is_value_error(text):
    with pytest.raises(ValueError, match="weight"):
        parse_prompt_attention(text)


def sched(prompt, steps, hires=None, old=False):
    return get_learned_conditioning_prompt_schedules([prompt], steps, hires, old)[0]


SCHEDULES = [
    # (prompt, steps, expected) — S1…S13, S17…S26, S29
    ("test", 10, [[10, "test"]]),
    ("a [b:3]", 10, [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", 10, [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", 10, [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", 10, [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", 10, [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", 10, [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", 10, [[10, "a [unbalanced"]]),
    ("a [b:.5] c", 10, [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", 10, [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("a [{b|d{:.5] c", 10, [[10, "a [{b|d{:.5] c"]]),
    ("[a|(b:1.1)]", 10, [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]),
    ("[fe|]male", 10, [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", 10, [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
    ("[a:b:0.5]", 20, [[10, "a"], [20, "b"]]),
    ("[a:b:0.5]", 21, [[10, "a"], [21, "b"]]),
    ("[a:b:1]", 20, [[1, "a"], [20, "b"]]),
    ("[a:b:1.0]", 20, [[20, "a"]]),
    ("[a:b:25]", 20, [[20, "a"]]),
    ("[a:b:0]", 20, [[20, "b"]]),
    ("[a:b:-1]", 20, [[20, "b"]]),
    ("[a:b:0.15]", 10, [[1, "a"], [10, "b"]]),
    ("[a:b:0.05]", 10, [[10, "b"]]),
    ("[a:b:0.99]", 10, [[9, "a"], [10, "b"]]),
    ("[a:b:0.29]", 100, [[28, "a"], [100, "b"]]),
    ("[a:b:.5]", 7, [[3, "a"], [7, "b"]]),
    ("[a:b:5.]", 10, [[10, "a"]]),
    ("[a:b:1e1]", 10, [[10, "a"]]),
    ("[a:b:+3]", 10, [[3, "a"], [10, "b"]]),
    ("[a::3]", 10, [[3, "a"], [10, ""]]),
    ("[:b:3]", 10, [[3, ""], [10, "b"]]),
    ("[:3]", 10, [[3, ""], [10, ""]]),
    ("[ a: b :5]", 10, [[5, " a"], [10, " b "]]),
    ("[a:b:c:3]", 10, [[10, "[a:b:c:3]"]]),
    ("[a:b:5] [c:d:e:3]", 10, [[5, "a [c:d:e:3]"], [10, "b [c:d:e:3]"]]),
    ("[]", 10, [[10, "[]"]]),
    ("[a:b:5] ]", 10, [[5, "a ]"], [10, "b ]"]]),
    ("([a:b:5]:1.2)", 10, [[5, "(a:1.2)"], [10, "(b:1.2)"]]),
    ("[[a:b:5]:c:7]", 10, [[5, "a"], [7, "b"], [10, "c"]]),
    ("[[a:b:5]]", 10, [[5, "[a]"], [10, "[b]"]]),
    ("[a|b]", 3, [[1, "a"], [2, "b"], [3, "a"]]),
    ("[a|b|c]", 7, [[1, "a"], [2, "b"], [3, "c"], [4, "a"], [5, "b"], [6, "c"], [7, "a"]]),
    ("[a|]", 4, [[1, "a"], [2, ""], [3, "a"], [4, ""]]),
    ("[a|[b|c]]", 6, [[1, "a"], [2, "c"], [3, "a"], [4, "c"], [5, "a"], [6, "c"]]),
    ("[a:[b|c]:3]", 6, [[1, "a"], [2, "a"], [3, "a"], [4, "c"], [5, "b"], [6, "c"]]),
    ("[[a|b]:c:3]", 6, [[1, "a"], [2, "b"], [3, "a"], [4, "c"], [5, "c"], [6, "c"]]),
    ("a [b|c] d [e:f:2]", 4, [[1, "a b d e"], [2, "a c d e"], [3, "a b d f"], [4, "a c d f"]]),
    ("a [b:c:0.5] [d|e]", 4, [[1, "a b d"], [2, "a b e"], [3, "a c d"], [4, "a c e"]]),
    ("a (b:[c:d:2]) e", 10, [[2, "a (b:c) e"], [10, "a (b:d) e"]]),
    ("[a\\:b:3]", 10, [[3, ""], [10, "a\\:b"]]),
    ("[a:b:3] [c:d:0.5]", 10, [[3, "a c"], [5, "b c"], [10, "b d"]]),
    ("a | b [c:d:5]", 10, [[10, "a | b [c:d:5]"]]),
    ("[a:b:5] {x|y}", 10, [[10, "[a:b:5] {x|y}"]]),
    ("a [b:c:5] \\| d", 10, [[5, "a b \\| d"], [10, "a c \\| d"]]),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), SCHEDULES)
def test_prompt_schedules(prompt, steps, expected):
    assert sched(prompt, steps) == expected


def test_schedule_module_comment_example():  # S15
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]")
    assert sched(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


def test_schedules_batch():  # S16
    assert get_learned_conditioning_prompt_schedules(["a red crown", "a [blue:green:5] jeweled crown"], 20) == [
        [[20, "a red crown"]],
        [[5, "a blue jeweled crown"], [20, "a green jeweled crown"]],
    ]


@pytest.mark.parametrize(("prompt", "base", "hires", "new", "old"), [  # S14, S27
    ("a [b:.5] c", 10, 10, [[10, "a b c"]], None),
    ("a [b:1.5] c", 10, 10, [[5, "a  c"], [10, "a b c"]], None),
    ("[a:b:5]", 20, 10, [[10, "b"]], [[5, "a"], [20, "b"]]),
    ("[a:b:25]", 20, 10, [[5, "a"], [10, "b"]], [[20, "a"]]),
    ("[a:b:0.5]", 20, 10, [[10, "b"]], [[10, "a"], [20, "b"]]),
    ("[a:b:1.5]", 20, 10, [[5, "a"], [10, "b"]], [[1, "a"], [20, "b"]]),
    ("[a:b:1.25]", 20, 10, [[2, "a"], [10, "b"]], None),
    ("[a:b:20]", 20, 10, [[10, "b"]], None),
    ("[a:b:30]", 20, 10, [[10, "a"]], None),
    ("[a:b:2.0]", 20, 10, [[10, "a"]], None),
    ("[a:b:25]", 40, 20, [[20, "b"]], None),
    ("[a:b:45]", 40, 20, [[5, "a"], [20, "b"]], None),
])
def test_hires_schedules(prompt, base, hires, new, old):
    assert sched(prompt, base, hires) == new
    if old is not None:
        assert sched(prompt, base, hires, old=True) == old


@pytest.mark.parametrize(("prompt", "expected"), [  # S28
    ("[a:b:1.0]", [[1, "a"], [10, "b"]]),
    ("[a:b:3.5]", [[3, "a"], [10, "b"]]),
    ("[a:b:1.5]", [[1, "a"], [10, "b"]]),
    ("[a:b:0.5]", [[5, "a"], [10, "b"]]),
    ("[a:b:3]", [[3, "a"], [10, "b"]]),
])
def test_old_scheduling(prompt, expected):
    assert sched(prompt, 10, old=True) == expected


MULTICOND = [  # M1–M7
    (["a AND b"], [[(0, 1.0), (1, 1.0)]], ["a", " b"]),
    (["a:1.5 AND b :0.5"], [[(0, 1.5), (1, 0.5)]], ["a", " b"]),
    (["cat AND dog AND cat"], [[(0, 1.0), (1, 1.0), (2, 1.0)]], ["cat", " dog", " cat"]),
    (["a cat:0.5"], [[(0, 0.5)]], ["a cat"]),
    (["(a:1.5)"], [[(0, 1.0)]], ["(a:1.5)"]),
    (["ANDROID AND"], [[(0, 1.0), (1, 1.0)]], ["ANDROID", ""]),
    (["a and b"], [[(0, 1.0)]], ["a and b"]),
    (["AND"], [[(0, 1.0), (0, 1.0)]], [""]),
    (["x:1:2"], [[(0, 2.0)]], ["x:1"]),
    (["a:1e2"], [[(0, 1.0)]], ["a:1e2"]),
    (["a :  3"], [[(0, 3.0)]], ["a"]),
    (["a AND b", "b AND c"], [[(0, 1.0), (1, 1.0)], [(2, 1.0), (3, 1.0)]], ["a", " b", "b", " c"]),
]


@pytest.mark.parametrize(("prompts", "indexes", "flat"), MULTICOND)
def test_multicond_prompt_list(prompts, indexes, flat):
    assert get_multicond_prompt_list(prompts) == (indexes, flat)


@pytest.mark.parametrize(("prompt", "weights"), [
    ("a AND b:-1", [1.0, -1.0]), ("a AND b: 2.", [1.0, 2.0]), ("a AND b:.5 ", [1.0, 0.5]),
])
def test_multicond_weights(prompt, weights):
    indexes, _ = get_multicond_prompt_list([prompt])
    assert [w for _, w in indexes[0]] == weights


@pytest.mark.parametrize(("style", "prompt", "expected"), [  # Y1, Y2
    ("masterpiece, {prompt}, best", "cat", "masterpiece, cat, best"),
    ("oil painting", "  cat ", "cat, oil painting"),
    ("", "cat ", "cat"),
    ("oil painting", "", "oil painting"),
    ("{prompt} {prompt}", "x", "x x"),
    ("  style  ", "cat,", "cat,, style"),
    ("a, {prompt}", " cat ", "a,  cat "),
])
def test_merge_prompts(style, prompt, expected):
    assert merge_prompts(style, prompt) == expected


def test_apply_styles_in_order():  # Y3
    assert apply_styles("cat", ["A {prompt} B", "C"]) == "A cat B, C"
    assert apply_styles("cat", ["C", "A {prompt} B"]) == "A cat, C B"


def test_extra_networks():  # X1–X7
    text, nets = parse_extra_networks("a cat <lora:foo:0.8>")
    assert text == "a cat " and [p.items for p in nets["lora"]] == [["foo", "0.8"]]
    text, nets = parse_extra_networks("<lora:foo:0.8><hypernet:bar>")
    assert text == "" and nets["lora"][0].positional == ["foo", "0.8"] and nets["hypernet"][0].items == ["bar"]
    _, nets = parse_extra_networks("<lora:foo:te=0.5:unet=1>")
    assert nets["lora"][0].positional == ["foo"] and nets["lora"][0].named == {"te": "0.5", "unet": "1"}
    for unchanged in ("<lora:>", "<my-lora:x>"):
        assert parse_extra_networks(unchanged) == (unchanged, {})
    assert parse_extra_networks("<lora:a<b:1>")[1]["lora"][0].items == ["a<b", "1"]
    assert list(parse_extra_networks("<LoRA:x:1>")[1]) == ["LoRA"]
    assert parse_extra_networks("<lora:x:a=b=c>")[1]["lora"][0].positional == ["x", "a=b=c"]
    assert parse_extra_networks("<lora: x :1>")[1]["lora"][0].positional[0] == " x "
    assert parse_extra_networks("a, <lora:x:1>, b")[0] == "a, , b"
    texts, nets = parse_extra_networks_batch(["a <lora:x:1>", "b <lora:y:1>"])
    assert texts == ["a ", "b "] and [p.positional[0] for p in nets["lora"]] == ["x"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab []():|1.5\\", max_size=24))
def test_skipping_earley_for_prompts_without_editing_changes_nothing(prompt):
    """Where no ``:``/``|`` stands inside ``[…]``, A1111's Earley parse can only give the prompt back unchanged."""
    from retouch.prompt_parser import _may_schedule, _render, _resolve_steps, _schedule_parser

    if _may_schedule(prompt):
        return
    try:
        tree = _schedule_parser().parse(prompt)
    except lark.exceptions.LarkError:
        return  # A1111 uses the prompt verbatim
    ends = _resolve_steps(tree, 10, 0, 0.0, False)
    assert [[end, "".join(_render(tree, end))] for end in ends] == [[10, prompt]]


def test_long_emphasis_prompts_are_not_earley_parsed():
    prompt = "[a] " + "(word:1.1), " * 400  # seconds of Earley parsing, for a schedule of one entry
    assert get_learned_conditioning_prompt_schedules([prompt], 20) == [[[20, prompt]]]


# A1111's own patterns, the reference for the linear scanners (they backtrack quadratically on long inputs)
A1111_RE_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
A1111_RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")
WEIGHT_TEXT = st.text(alphabet=" \t\n\u00a0:.+-1٣9aé>", max_size=24)
TAG_TEXT = st.text(alphabet="<>:a_1 é.\n", max_size=30)


@settings(max_examples=3000, deadline=None)
@given(WEIGHT_TEXT)
def test_split_weight_is_a1111s_pattern(text):
    assert split_weight(text) == A1111_RE_WEIGHT.search(text).groups()


@settings(max_examples=3000, deadline=None)
@given(TAG_TEXT)
def test_extra_network_tags_are_a1111s_pattern(text):
    expected = [(m.start(), m.end(), m.group(1), m.group(2)) for m in A1111_RE_EXTRA_NET.finditer(text)]
    assert list(extra_network_tags(text)) == expected
    assert parse_extra_networks(text)[0] == A1111_RE_EXTRA_NET.sub("", text)

