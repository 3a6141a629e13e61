"""Chunking, emphasis and schedule lookup: prompt spec §13.3, §13.5, §13.6 (EXACT)."""

import pytest
import torch

from retouch import Options
from retouch.conditioning import (
    Conditioning,
    PromptContext,
    ScheduledPromptConditioning,
    get_learned_conditioning,
    get_multicond_learned_conditioning,
    reconstruct_cond_batch,
    reconstruct_multicond_batch,
    stack_conds,
)
from retouch.models.text_encoder import (
    BOS_ID,
    EOS_ID,
    _pad_after_first_eos,
    apply_emphasis,
    encode_texts,
    tokenize_line,
)

CAT, DOG, COMMA = 2368, 1929, 267


@pytest.fixture(scope="module")
def encoder(bundled_tiny):
    return bundled_tiny.text_encoder


def counts(encoder, text, **opts):
    chunks, count = tokenize_line(encoder, text, Options(**opts))
    real = [sum(1 for t in c.tokens[1:-1] if t != EOS_ID) for c in chunks]
    assert all(len(c.tokens) == 77 and len(c.multipliers) == 77 for c in chunks)
    return count, real


def words(word, n):
    return " ".join([word] * n)


def test_empty_prompt_is_one_padding_chunk(encoder):  # C1
    chunks, count = tokenize_line(encoder, "", Options())
    assert count == 0 and len(chunks) == 1
    assert chunks[0].tokens == [BOS_ID] + [EOS_ID] * 76


def test_plain_prompt_tokens(encoder):  # C2
    chunks, count = tokenize_line(encoder, "a photo of a cat", Options())
    assert count == 5 and chunks[0].tokens[:7] == [BOS_ID, 320, 1125, 539, 320, CAT, EOS_ID]


@pytest.mark.parametrize(("n", "expected"), [(75, (75, [75])), (76, (76, [75, 1])), (150, (150, [75, 75])),
                                              (151, (151, [75, 75, 1]))])
def test_long_prompts_split_in_75_token_chunks(encoder, n, expected):  # C3
    assert counts(encoder, words("cat", n)) == expected


@pytest.mark.parametrize(("cats", "dogs", "expected"), [
    (70, 10, (85, [71, 10])), (55, 30, (105, [56, 30])), (54, 30, (85, [75, 10])), (50, 30, (81, [75, 6])),
    (74, 5, (80, [75, 5])), (75, 5, (81, [75, 6])),
])
def test_comma_backtracking(encoder, cats, dogs, expected):  # C4–C6
    assert counts(encoder, words("cat", cats) + ", " + words("dog", dogs)) == expected


def test_comma_backtracking_option(encoder):  # C7
    assert counts(encoder, words("cat", 70) + ", " + words("dog", 10), comma_padding_backtrack=0) == (81, [75, 6])
    assert counts(encoder, words("cat", 10) + ", " + words("dog", 70), comma_padding_backtrack=74) == (145, [11, 70])


def test_backtracked_chunk_layout(encoder):  # C4 detail: 70 cats + comma + 4 EOS pad + EOS
    chunks, _ = tokenize_line(encoder, words("cat", 70) + ", " + words("dog", 10), Options())
    assert chunks[0].tokens == [BOS_ID] + [CAT] * 70 + [COMMA] + [EOS_ID] * 5
    assert chunks[1].tokens[1:11] == [DOG] * 10


@pytest.mark.parametrize(("text", "expected"), [
    ("a BREAK b", (76, [1, 1])), ("BREAK a", (76, [0, 1])), ("a BREAK", (75, [1])), ("BREAK", (75, [0])),
    ("a BREAK BREAK b", (151, [1, 0, 1])),
])
def test_break(encoder, text, expected):  # C8
    assert counts(encoder, text) == expected


def test_break_after_long_run(encoder):  # C8
    assert counts(encoder, words("cat", 80) + " BREAK " + words("dog", 5)) == (155, [75, 5, 5])


def test_emphasis_none_keeps_syntax_literal(encoder):  # C9
    assert counts(encoder, "a BREAK b", emphasis="None") == (3, [3])


@pytest.mark.parametrize(("text", "tokens", "multipliers"), [
    ("an (important) word", [BOS_ID, 550, 2829, 2653, EOS_ID], [1.0, 1.0, 1.1, 1.0, 1.0]),
    ("a (b:1.5), (c d:0.5)", [BOS_ID, 320, 321, 267, 322, 323, EOS_ID], [1.0, 1.0, 1.5, 1.0, 0.5, 0.5, 1.0]),
    ("(a BREAK b)", [BOS_ID, 320, 2568, 321, EOS_ID], [1.0, 1.1, -1.1, 1.1, 1.0]),
    ("\\(a\\)", [BOS_ID, 263, 320, 264, EOS_ID], [1.0] * 5),
])
def test_tokens_and_multipliers(encoder, text, tokens, multipliers):  # C10–C13
    chunks, _ = tokenize_line(encoder, text, Options())
    n = len(tokens)
    assert chunks[0].tokens[:n] == tokens
    assert chunks[0].multipliers[:n] == multipliers
    assert chunks[0].multipliers[n:] == [1.0] * (77 - n)


def test_emphasis_moves_with_backtracked_tokens(encoder):  # C14
    chunks, _ = tokenize_line(encoder, words("cat", 70) + ", (" + words("dog", 10) + ":1.3)", Options())
    assert [sum(1 for t in c.tokens[1:-1] if t != EOS_ID) for c in chunks] == [71, 10]
    assert chunks[1].multipliers == [1.0] + [1.3] * 10 + [1.0] * 66


def test_emphasis_toy_example():  # E2
    z = torch.tensor([[[2.0], [4.0]]])
    m = torch.tensor([[1.0, 2.0]])
    assert torch.allclose(apply_emphasis(z, m, "Original"), torch.tensor([[[1.2], [4.8]]]))
    assert torch.equal(apply_emphasis(z, m, "No norm"), torch.tensor([[[2.0], [8.0]]]))
    assert torch.equal(apply_emphasis(z, m, "Ignore"), z)


def test_sd2_pads_with_zero_after_first_eos():  # E4
    row = torch.tensor([[BOS_ID, 5, 6, EOS_ID, EOS_ID, EOS_ID]])
    assert _pad_after_first_eos(row, 0).tolist() == [[BOS_ID, 5, 6, EOS_ID, 0, 0]]
    full = torch.tensor([[BOS_ID, 5, EOS_ID]])
    assert _pad_after_first_eos(full, 0).tolist() == [[BOS_ID, 5, EOS_ID]]


def test_stack_conds_repeats_last_row():  # E5
    short, long = torch.arange(4.0).reshape(2, 2), torch.ones(5, 2)
    out = stack_conds([short, long])
    assert out.shape == (2, 5, 2)
    assert torch.equal(out[0, 2:], short[-1].repeat(3, 1))


def test_chunks_are_encoded_separately_and_concatenated(encoder):  # E1
    long_text = words("cat", 76)
    both = encode_texts(encoder, ["a", long_text], Options())
    assert both.shape == (2, 154, encoder.width)
    # the short text's second chunk is the encoding of an empty chunk in that batch
    alone = encode_texts(encoder, [""], Options())
    assert torch.allclose(both[0, 77:], alone[0], atol=1e-6)


def test_clip_skip_uses_penultimate_layer_through_final_norm(encoder):  # E3
    tokens = torch.tensor([[BOS_ID, 320, 2368] + [EOS_ID] * 74])
    out = encoder.transformer(input_ids=tokens, output_hidden_states=True)
    skip2 = encoder.encode(tokens, clip_skip=2)
    assert torch.equal(skip2, encoder.transformer.final_layer_norm(out.hidden_states[-2]))
    assert torch.equal(encoder.encode(tokens, clip_skip=1), out.last_hidden_state)
    with pytest.raises(ValueError, match="CLIP_stop_at_last_layers"):
        encoder.encode(tokens, clip_skip=3)


def entries(*ends):
    return [ScheduledPromptConditioning(end, Conditioning(torch.full((1, 1), float(i)))) for i, end in enumerate(ends)]


@pytest.mark.parametrize(("ends", "steps", "picked"), [
    ((3, 10), range(10), [0] * 4 + [1] * 6),  # L1
    ((1, 2, 3, 4), range(4), [0, 0, 1, 2]),  # L2 (a, a, b, a)
    ((5, 10), [11], [0]),  # L5: past the end → first entry
])
def test_schedule_lookup(ends, steps, picked):
    schedule = entries(*ends)
    assert [int(reconstruct_cond_batch([schedule], s).crossattn[0, 0, 0]) for s in steps] == picked


def test_img2img_visits_only_start_of_timeline(bundled_tiny):  # L3
    conds = get_learned_conditioning(bundled_tiny, ["[a:b:0.25]"], 20, PromptContext(Options()))
    a, b = conds[0][0].cond.crossattn, conds[0][1].cond.crossattn
    picked = ["a" if torch.equal(reconstruct_cond_batch(conds, s).crossattn[0], a) else "b" for s in range(11)]
    assert picked == ["a"] * 6 + ["b"] * 5
    assert not torch.equal(a, b)


def test_multicond_rows_and_weights(bundled_tiny):
    conds = get_multicond_learned_conditioning(bundled_tiny, ["cat AND dog:0.5", "cat"], 10, PromptContext(Options()))
    conds_list, rows = reconstruct_multicond_batch(conds, 0)
    assert conds_list == [[(0, 1.0), (1, 0.5)], [(2, 1.0)]]
    assert rows.crossattn.shape == (3, 77, bundled_tiny.text_encoder.width) and rows.vector is None
    assert torch.equal(rows.crossattn[0], rows.crossattn[2])  # "cat" shared in the flat list


def test_schedule_texts_share_chunk_count(bundled_tiny):
    conds = get_learned_conditioning(bundled_tiny, ["[a:" + words("cat", 80) + ":3]"], 10, PromptContext(Options()))
    assert [c.cond.tokens for c in conds[0]] == [154, 154]


def test_conditioning_stack_keeps_the_vector_part():
    a = Conditioning(torch.zeros(77, 4), torch.ones(6))
    b = Conditioning(torch.ones(154, 4), torch.full((6,), 2.0))
    both = Conditioning.stack([a, b])
    assert both.crossattn.shape == (2, 154, 4) and torch.equal(both.vector[:, 0], torch.tensor([1.0, 2.0]))
    assert torch.equal(both[1].crossattn, b.crossattn) and torch.equal(both[1].vector, b.vector)
    assert Conditioning.stack([a, Conditioning(torch.zeros(77, 4))]).vector is None
