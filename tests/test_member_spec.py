import pytest

from polyfuse.errors import ConfigError
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
        ("a/b?temperature=hot", "is not a float"),
    ],
)
def test_bad_pool_specs_are_config_errors(pool, message):
    with pytest.raises(ConfigError, match=message):
        parse_pool(pool)
