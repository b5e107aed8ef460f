"""Prompt templates: Jinja2 fields, seeded demo choice, rendering (no model needed)."""

import pytest

from prompting.chains import Chain, ChainStep, DemoPool, parse_answer, plain_chain
from prompting.errors import PromptingError
from prompting.templates import PromptTemplate, template_fields

POOL = [{"text": f"example {i}", "label": i % 2} for i in range(12)]
LABELS = [r["label"] for r in POOL]


def test_renders_instruction_demos_and_input_with_jinja_fields():
    t = PromptTemplate(example="Passage: {{ text | upper }}\nAnswer:", instruction="Answer Yes or No.", k=2)
    out = t.render({"text": "the cat sat"}, [({"text": "a"}, " Yes"), ({"text": "b"}, " No")])
    assert out == ("Answer Yes or No.\n\nPassage: A\nAnswer: Yes\n\nPassage: B\nAnswer: No\n\n"
                   "Passage: THE CAT SAT\nAnswer:")
    assert t.fields == ["text"]
    assert template_fields("{{ premise }} {{ hypothesis | rstrip_period }}") == ["hypothesis", "premise"]


def test_missing_field_and_bad_syntax_say_what_is_wrong():
    with pytest.raises(PromptingError, match="has"):
        PromptTemplate(example="{{ question }}").render({"text": "x"})
    with pytest.raises(PromptingError, match="not valid Jinja2"):
        PromptTemplate(example="{{ text ")


def test_demo_choice_is_deterministic_per_seed_and_differs_across_seeds():
    picks = {seed: PromptTemplate(example="{{ text }}", k=4, seed=seed).select_demos(POOL, LABELS) for seed in range(6)}
    again = {seed: PromptTemplate(example="{{ text }}", k=4, seed=seed).select_demos(POOL, LABELS) for seed in range(6)}
    assert picks == again
    assert len({tuple(p) for p in picks.values()}) > 1
    for p in picks.values():
        assert len(set(p)) == 4 and {LABELS[i] for i in p} == {0, 1}, "stratified: both classes shown"
    plain = PromptTemplate(example="{{ text }}", k=3, seed=1).select_demos(POOL)
    assert plain == PromptTemplate(example="{{ text }}", k=3, seed=1).select_demos(POOL)


def test_long_fields_are_truncated_at_a_word_boundary():
    t = PromptTemplate(example="{{ text }}", max_chars=20)
    assert t.render({"text": "word " * 50}).endswith(" ...")
    assert len(t.render({"text": "word " * 50})) <= 24


def test_chains_that_differ_only_in_seed_differ_only_in_demos():
    pool = DemoPool(tuple(POOL), tuple(LABELS))
    a = plain_chain("a", "{{ text }}\nAnswer:", [" No", " Yes"], k=3, seed=0)
    b = a.with_seed(5)
    from prompting.chains import chain_prompts

    pa, pb = chain_prompts(a, [{"text": "new"}], pool)[0], chain_prompts(b, [{"text": "new"}], pool)[0]
    assert pa != pb and pa.endswith("new\nAnswer:") and pb.endswith("new\nAnswer:")
    assert pa.count("Answer:") == pb.count("Answer:") == 4


def test_parse_answer_maps_words_to_classes_and_abstains_otherwise():
    verb = [["no", "false"], ["yes", "true"]]
    assert parse_answer(" Yes, it is.", verb) == 1
    assert parse_answer("False\nmore", verb) == 0
    assert parse_answer("I think so", verb) == -1
    assert parse_answer("", verb) == -1
    assert parse_answer("yesterday", verb) == -1


def test_chain_validation_names_the_problem():
    step = ChainStep(PromptTemplate(example="{{ text }}"))
    with pytest.raises(PromptingError, match="no verbalizers"):
        Chain("c", (step,))
    scored = ChainStep(PromptTemplate(example="{{ text }}"), choices=((" a",), (" b",)))
    with pytest.raises(PromptingError, match="not the last step"):
        Chain("c", (scored, step), verbalizers=(("a",), ("b",)))
    with pytest.raises(PromptingError, match="calibrate"):
        Chain("c", (scored,), calibrate="magic")
