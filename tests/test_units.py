import pytest

from streamgenre.errors import InputError
from streamgenre.units import parse_duration, parse_size


@pytest.mark.parametrize(
    "text, seconds",
    [("15s", 15.0), ("0:15", 15.0), ("1500ms", 1.5), ("15", 15.0), ("1:02:03.5", 3723.5), ("2m", 120.0), (3, 3.0)],
)
def test_parse_duration_accepts_every_documented_form(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fifteen", "15x", "1:xx", "-3s", "1:2:3:4", ""])
def test_parse_duration_rejects_garbage_with_input_error(text):
    with pytest.raises(InputError):
        parse_duration(text)


@pytest.mark.parametrize("text, size", [("256MB", 256_000_000), ("1GiB", 1 << 30), ("500k", 500_000), ("1000", 1000)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["big", "0", "12 parsecs"])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(InputError):
        parse_size(text)


def test_counts_read_right_for_one_and_for_many():
    from streamgenre.units import count_of

    assert [count_of(n, "loader worker") for n in (0, 1, 2)] == ["0 loader workers", "1 loader worker", "2 loader workers"]
