"""cktf_hf.formatting: the styles the benchmarks' reports use beside the model card's."""

from __future__ import annotations

import pytest

from cktf_hf.formatting import format_accuracy, format_count, format_duration, format_ratio


def test_a_count_in_full_exact_or_in_millions():
    assert format_count(1_235_274) == "1,235,274 (1.2M)"
    assert format_count(1_235_274, "exact") == "1,235,274"
    assert format_count(214_000, "millions") == "0.21M"
    with pytest.raises(ValueError, match="style"):
        format_count(1_000, "short")


def test_a_duration_in_one_unit():
    assert format_duration(252) == "4 min 12 s"
    assert format_duration(189.6, "s") == "190 s"
    assert format_duration(252, "min") == "4.2 min"
    assert format_duration(33_120, "hours") == "9.2 hours"
    with pytest.raises(ValueError, match="unit"):
        format_duration(60, "h")


def test_an_accuracy_without_its_percent_sign_reads_as_python_percent_format():
    for value in (i / 9973 for i in range(0, 9974, 7)):
        assert format_accuracy(value) == f"{value:.2%}"
        assert format_accuracy(value, percent_sign=False) == f"{100 * value:.2f}"


def test_a_ratio_already_divided():
    assert format_ratio(1.28125) == "1.28×"
    assert format_ratio(50.0) == format_ratio(1000, 20) == "50.0×"
