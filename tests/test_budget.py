import pytest

from autopeft.budget import parse_budget
from autopeft.errors import BudgetError


@pytest.mark.parametrize(
    ("text", "fraction", "count"),
    [
        ("0.5%", 0.005, None),
        ("0.005", 0.005, None),
        ("120k", None, 120_000),
        ("2M", None, 2_000_000),
        ("50000", None, 50_000),
        (" 1.5 % ", 0.015, None),
        ("1e-3", 0.001, None),
    ],
)
def test_parses_fractions_and_counts(text, fraction, count):
    budget = parse_budget(text)
    assert budget.fraction == pytest.approx(fraction) if fraction else budget.fraction is None
    assert budget.max_params == count


def test_limit_of_a_fraction_is_relative_to_the_backbone():
    assert parse_budget("0.5%").limit(22_713_216) == 113_566
    assert parse_budget("120k").limit(22_713_216) == 120_000


@pytest.mark.parametrize("text", ["abc", "", "0", "-1%", "0%", "100%", "150%", "1.5k5", "0.5x", "1.2345"])
def test_rejects_bad_budgets_with_one_line(text):
    with pytest.raises(BudgetError) as info:
        parse_budget(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["50M", "22713216", "0.03G"])
def test_a_count_not_below_the_backbone_is_refused_like_a_fraction_of_100_percent(text):
    with pytest.raises(BudgetError, match="below 100% of the backbone") as info:
        parse_budget(text).limit(22_713_216)
    assert "\n" not in str(info.value)
    assert parse_budget("22713215").limit(22_713_216) == 22_713_215
