"""Context grids of ctxsim.sweep and the CLI: ranges, lists, and invalid input."""

import numpy as np
import pytest

from ctxsim.cli.main import main
from ctxsim.spec import SpecError
from ctxsim.sweep import DEFAULT_POINTS, context_grid, parse_token_count


def test_range_log_spaced_ends_exact():
    grid = context_grid("1k..10m", points=200)
    assert grid[0] == 1024
    assert grid[-1] == 10 * 1024**2
    assert grid.size == 200  # the step near 1k is about 48 tokens, so no point merges
    assert grid.dtype == np.int64


def test_range_steps_are_log_spaced():
    grid = context_grid("1k..1m", points=11)
    # 11 points over a factor of 1024 are a factor of 2 apart: 1k, 2k, ..., 1m.
    assert grid.tolist() == [1024 * 2**i for i in range(11)]


def test_range_drops_rounded_repeats():
    grid = context_grid("1..100", points=200)
    assert grid.size < 200
    assert np.all(np.diff(grid) > 0)
    assert grid[0] == 1
    assert grid[-1] == 100


def test_range_default_points():
    assert context_grid("1k..10m").size == DEFAULT_POINTS


def test_list_parses_suffixes():
    assert context_grid("4k,32k,128k").tolist() == [4096, 32768, 131072]


def test_list_sorted_and_distinct():
    assert context_grid("128k, 4k,4k").tolist() == [4096, 131072]


def test_single_count():
    assert context_grid("1m").tolist() == [1024**2]


def test_sequence_of_ints():
    assert context_grid(np.array([8192, 1024, 8192])).tolist() == [1024, 8192]


def test_token_count_units():
    assert parse_token_count("3g") == 3 * 1024**3
    assert parse_token_count(" 7 ") == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10m..1k", "start (10,485,760) must be below the end (1,024)"),
        ("1k..1k", "must be below the end"),
        ("1k...10m", "write START..END"),
        ("1k..", "write START..END"),
        ("..10m", "write START..END"),
        ("1x..2m", "invalid token count '1x'"),
        ("0..1k", "at least 1 token"),
        ("", "empty context list"),
        ("4k,,8k", "single commas"),
        ("-5", "invalid token count '-5'"),
        ("1.5k", "invalid token count"),
    ],
)
def test_invalid_contexts_rejected(text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        context_grid(text)


@pytest.mark.parametrize("points", [1, 0, True, 2.5])
def test_range_rejects_bad_points(points):
    with pytest.raises(SpecError, match="invalid points"):
        context_grid("1k..1m", points=points)


def test_list_rejects_points():
    with pytest.raises(SpecError, match="applies to a range"):
        context_grid("4k,8k", points=10)


@pytest.mark.parametrize("values", [[], [0, 4], [1.5], [[1, 2]]])
def test_sequence_rejects_bad_values(values):
    with pytest.raises(SpecError, match="context values"):
        context_grid(values)


def test_cli_reversed_range_exit_2(capsys):
    code = main(["sweep", "--models", "glm-5", "--context", "10m..1k"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "invalid context range '10m..1k'" in err


def test_cli_notes_merged_points(capsys, tmp_path):
    out = tmp_path / "grid.csv"
    code = main(["sweep", "--models", "qwen3-32b", "--context", "1..100", "--points", "200", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0
    assert "200 log-spaced points over 1..100 round to" in err
