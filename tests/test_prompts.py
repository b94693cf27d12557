"""Prompt building from template files: slots, soft placeholder, truncation."""

import pytest

from recbole_delrec.llm.t5 import train_tokenizer
from recbole_delrec.prompts import PromptBuilder, domain_words, load_template

TITLES = ["[PAD]"] + [f"Movie number {n} ({1990 + n})" for n in range(1, 40)]


@pytest.fixture(scope="module")
def tokenizer():
    template = load_template("lsr", "movies")
    return train_tokenizer(TITLES[1:] + [template], 300)


def _builder(tokenizer, max_tokens=512, n_soft=5, task="lsr"):
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    titles = [encode(t) for t in TITLES]
    static = {"teacher": "SASRec", **domain_words("movies")}
    return PromptBuilder(load_template(task, "movies"), static, encode, titles, n_soft, max_tokens,
                         tokenizer.pad_token_id, [tokenizer.eos_token_id]), titles


def test_templates_are_files_with_domain_wording():
    text = load_template("lsr", "games")
    assert "{soft_prompt}" in text and "{verb_past}" in text
    assert domain_words("games")["verb_past"] == "played"
    assert domain_words("products")["verb_past"] == "purchased"
    with pytest.raises(ValueError, match="domain"):
        domain_words("cars")


def test_prompt_holds_history_candidates_and_soft_placeholder(tokenizer):
    builder, titles = _builder(tokenizer)
    prompt = builder.build(history=[1, 2, 3], candidates=[4, 5, 6])
    ids = prompt.input_ids
    assert ids[-1] == tokenizer.eos_token_id
    assert ids[prompt.soft_start : prompt.soft_start + 5] == [tokenizer.pad_token_id] * 5
    text = builder.render(TITLES, history=[1, 2, 3], candidates=[4, 5, 6])
    assert "SASRec" in text and "watched" in text and "[SOFT PROMPT x5]" in text
    assert text.index(TITLES[1]) < text.index(TITLES[3]) < text.index(TITLES[4])
    for item in (1, 2, 3, 4, 5, 6):
        assert _contains(ids, titles[item])


def test_long_prompts_lose_oldest_history_never_candidates(tokenizer):
    full, _ = _builder(tokenizer)
    history, candidates = list(range(1, 21)), list(range(21, 31))
    untruncated = len(full.build(history=history, candidates=candidates).input_ids)
    short, titles = _builder(tokenizer, max_tokens=untruncated - 15)
    ids = short.build(history=history, candidates=candidates).input_ids
    assert len(ids) <= untruncated - 15
    assert not _contains(ids, titles[1])  # the oldest history item went first
    assert _contains(ids, titles[20])  # the most recent stayed
    assert all(_contains(ids, titles[c]) for c in candidates)


def test_truncation_keeps_the_longest_history_that_fits(tokenizer):
    full, _ = _builder(tokenizer)
    history, candidates = list(range(1, 21)), list(range(21, 31))
    lengths = [len(full.build(history=history[k:], candidates=candidates).input_ids) for k in range(20)]
    for budget in range(lengths[-1], lengths[0] + 1):
        short, _ = _builder(tokenizer, max_tokens=budget)
        kept = short.fitted(history=history, candidates=candidates)["history"]
        k = 20 - len(kept)
        assert kept == history[k:] and lengths[k] <= budget  # fits ...
        assert k == 0 or lengths[k - 1] > budget  # ... and one more title would not


def test_length_is_the_built_prompts_length(tokenizer):
    full, _ = _builder(tokenizer)
    history, candidates = list(range(1, 21)), list(range(21, 31))
    untruncated = len(full.build(history=history, candidates=candidates).input_ids)
    for budget in (untruncated, untruncated - 15):
        short, _ = _builder(tokenizer, max_tokens=budget)
        assert short.length(history=history, candidates=candidates) == len(
            short.build(history=history, candidates=candidates).input_ids)


def test_prompt_that_cannot_fit_names_the_option(tokenizer):
    builder, _ = _builder(tokenizer, max_tokens=40)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        builder.build(history=[1, 2], candidates=list(range(3, 30)))


def test_ta_template_fills_all_slots(tokenizer):
    builder, _ = _builder(tokenizer, task="ta")
    text = builder.render(TITLES, demo_history=[1, 2], demo_prediction=3, demo_answer=4,
                          query_history=[5, 6], query_prediction=7, candidates=[8, 9])
    assert "{" not in text and TITLES[7] in text


def _contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def test_history_cuts_are_counted_and_taken(tokenizer):
    full, _ = _builder(tokenizer)
    history, candidates = list(range(1, 21)), list(range(21, 31))
    untruncated = len(full.build(history=history, candidates=candidates).input_ids)
    short, _ = _builder(tokenizer, max_tokens=untruncated - 15)
    short.build(history=history, candidates=candidates)
    short.build(history=[1], candidates=candidates)
    short.fitted(history=history, candidates=candidates)  # re-reading a prompt is not building it again
    short.length(history=history, candidates=candidates)
    short.render(TITLES, history=history, candidates=candidates)
    cuts = short.take_cuts()
    assert (cuts.prompts, cuts.cut) == (2, 1) and cuts.titles >= 1
    assert short.take_cuts().prompts == 0  # taking starts the count again


@pytest.mark.parametrize("task", ["lsr", "ta"])
def test_longest_bounds_every_prompt_and_fits_means_no_error(tokenizer, task):
    builder, titles = _builder(tokenizer, task=task)
    by_length = sorted(range(1, len(titles)), key=lambda i: -len(titles[i]))
    longest = builder.longest(10)
    builder.max_tokens = longest  # the bound fits: the longest titles everywhere must build
    slots = {"history": by_length[10:20], "candidates": by_length[:10]} if task == "lsr" else {
        "demo_history": by_length[10:13], "demo_prediction": by_length[13], "demo_answer": by_length[14],
        "query_history": by_length[15:18], "query_prediction": by_length[18], "candidates": by_length[:10]}
    assert len(builder.build(**slots).input_ids) <= longest
