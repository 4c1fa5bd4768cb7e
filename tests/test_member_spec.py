import pytest

from polyfuse.errors import ConfigError, TooManyMembersError
from polyfuse.providers.base import parse_pool


def test_repeat_gives_unique_ids_distinct_seeds_and_sampling_temperature():
    specs = parse_pool("local/smollm2-135m*3,local/gemma3-270m")
    assert [s.id for s in specs] == [
        "local/smollm2-135m#1",
        "local/smollm2-135m#2",
        "local/smollm2-135m#3",
        "local/gemma3-270m",
    ]
    assert [s.params["seed"] for s in specs[:3]] == [0, 1, 2]
    assert all(s.params["temperature"] == 0.7 for s in specs[:3])
    assert specs[3].params == {}


def test_member_options_and_duplicate_plain_members():
    specs = parse_pool(["openai/gpt-4o?temperature=0.2&seed=7", "openai/gpt-4o"])
    assert specs[0].params == {"temperature": 0.2, "seed": 7}
    assert [s.id for s in specs] == ["openai/gpt-4o#1", "openai/gpt-4o#2"]


def test_repeat_keeps_explicit_temperature_and_offsets_seed():
    specs = parse_pool("x/m?temperature=1.1&seed=10*2")
    assert [(s.params["temperature"], s.params["seed"]) for s in specs] == [(1.1, 10), (1.1, 11)]


@pytest.mark.parametrize(
    "pool, message",
    [
        ("", "empty pool member"),
        ("a/b,,c/d", "empty pool member"),
        ("a/b?colour=red", "unknown member option 'colour'"),
        ("a/b?temperature=hot", "temperature='hot'.*valid number"),
        ("a/b?temperature=nan", "temperature='nan'.*finite number"),
        ("a/b?temperature=inf", "temperature='inf'.*finite number"),
        ("a/b?temperature=2.5", "temperature='2.5'.*less than or equal to 2"),
        ("a/b?top_p=0", "top_p='0'.*greater than 0"),
        ("a/b?max_tokens=-5", "max_tokens='-5'.*greater than or equal to 1"),
        ("a/b?seed=99999999999999999999999", "seed=.*less than or equal to"),
        ("a/b*0", "at least 1"),
    ],
)
def test_bad_pool_specs_are_config_errors(pool, message):
    with pytest.raises(ConfigError, match=message):
        parse_pool(pool)


def test_options_are_typed_before_use():
    [spec] = parse_pool("a/b?temperature=0.25&max_tokens=12&top_p=1&seed=-3")
    assert spec.params == {"temperature": 0.25, "max_tokens": 12, "top_p": 1.0, "seed": -3}


@pytest.mark.parametrize("count", ["10000000", "9" * 5000, "257"])
def test_a_huge_repeat_count_is_refused_before_expansion(count):
    # before: *10000000 built ten million specs (44 s, 4.35 GB); 5000 digits raised int()'s ValueError (a 500)
    with pytest.raises(TooManyMembersError, match="repeats more than the limit of 256"):
        parse_pool(f"fake/ok*{count}")


def test_a_pool_limit_is_checked_member_by_member():
    with pytest.raises(TooManyMembersError, match="more than the limit of 3 members"):
        parse_pool("a/b,c/d*5", max_members=4)
    with pytest.raises(TooManyMembersError, match="more than 2 members"):
        parse_pool(["a/b"] * 100_000, max_members=2)
    assert len(parse_pool("a/b*2,c/d*2", max_members=4)) == 4
