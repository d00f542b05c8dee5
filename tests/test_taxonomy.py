import pytest

from langchain_llamaguard.taxonomy import CATEGORIES, MODEL_CATEGORIES, resolve_categories, resolve_category


def test_fourteen_categories_with_prompt_names():
    assert list(CATEGORIES) == [f"S{i}" for i in range(1, 15)]
    assert CATEGORIES["S3"].name == "Sex Crimes" and CATEGORIES["S3"].card_name == "Sex-Related Crimes"
    assert CATEGORIES["S11"].name == "Self-Harm" and CATEGORIES["S11"].card_name == "Suicide & Self-Harm"
    assert CATEGORIES["S14"].name == "Code Interpreter Abuse"


def test_which_model_knows_which():
    assert MODEL_CATEGORIES["llama-guard-4"] == tuple(f"S{i}" for i in range(1, 15))
    assert MODEL_CATEGORIES["llama-guard-3-8b"] == tuple(f"S{i}" for i in range(1, 15))
    assert MODEL_CATEGORIES["llama-guard-3-1b"] == tuple(f"S{i}" for i in range(1, 14))


@pytest.mark.parametrize(
    "key,code",
    [
        ("S9", "S9"),
        ("s9", "S9"),
        (" S10 ", "S10"),
        ("Hate", "S10"),
        ("indiscriminate weapons", "S9"),
        ("Suicide & Self-Harm", "S11"),
        ("Child Sexual Exploitation", "S4"),
        ("Code Interpreter Abuse", "S14"),
    ],
)
def test_codes_and_names_resolve(key, code):
    assert resolve_category(key) == code


@pytest.mark.parametrize("bad", ["S0", "S15", "S99", "Weapons", "", "S1,S2"])
def test_unknown_key_names_the_valid_ones(bad):
    with pytest.raises(ValueError, match=r"unknown category .*valid: S1\.\.S14 or their names"):
        resolve_category(bad)


def test_resolve_many_sorts_and_dedupes_and_takes_a_single_string():
    assert resolve_categories(["Hate", "S1", "s10"]) == ("S1", "S10")
    assert resolve_categories("S6") == ("S6",)
    assert resolve_categories(None) == ()
