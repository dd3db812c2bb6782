"""A `logs` action's lines: chosen by what was printed, kept as the secret filter shows them."""

from __future__ import annotations

from remediator.actions.loglines import extract, keep

R = "<redacted>"
PRINTED = "password=ab user=app\nFATAL: password authentication failed\nok\n"


def test_grep_reads_the_line_as_printed_and_keeps_it_masked() -> None:
    kept = keep([("[c]", PRINTED)], "password", 10, 1000)
    assert kept == ([f"[c] password={R} user=app", "[c] FATAL: password authentication failed"],
                    2, False)
    # `extract` reads what was kept: a secret is never one of its values
    assert extract(kept[0], r"password=(\S+)") == [R]


def test_max_bytes_bounds_the_lines_as_kept() -> None:
    # `password=ab` fits as printed, not once masked (`<redacted>` is longer): not kept
    lines, matched, truncated = keep([("[c]", PRINTED)], None, 10, len("[c] password=ab user=app"))
    assert (lines, matched, truncated) == ([], 3, True)
