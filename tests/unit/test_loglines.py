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
    printed = "ok\npassword=ab user=app"
    lines, matched, truncated = keep([("[c]", printed)], None, 10, len("[c] password=ab user=app"))
    assert (lines, matched, truncated) == ([], 2, True)


def test_the_newest_matching_lines_are_kept_and_all_are_counted() -> None:
    # an application that logs every upload: the recent failures are what an incident needs
    text = "\n".join([f"s3_upload_completed {i}" for i in range(300)]
                     + [f"s3_upload_failed ExpiredToken {i}" for i in range(20)])
    lines, matched, truncated = keep([("[p]", text)], "(?i)upload", 25, 100_000)
    assert (matched, truncated, len(lines)) == (320, True, 25)
    assert lines[:5] == [f"[p] s3_upload_completed {i}" for i in range(295, 300)]
    assert lines[-1] == "[p] s3_upload_failed ExpiredToken 19"


def test_each_text_gives_its_newest_lines_in_turn_and_keeps_its_order() -> None:
    a = "\n".join(f"a{i}" for i in range(10))
    b = "\n".join(f"b{i}" for i in range(2))
    lines, matched, truncated = keep([("[a]", a), ("[b]", b)], None, 5, 1000)
    assert (lines, matched, truncated) == (
        ["[a] a7", "[a] a8", "[a] a9", "[b] b0", "[b] b1"], 12, True)
    # bytes bound it from the newest too: no gap, the older lines go
    assert keep([("[a]", a)], None, 10, 3 * len("[a] a0"))[0] == ["[a] a7", "[a] a8", "[a] a9"]


def test_a_private_key_whose_begin_was_cut_off_is_withheld() -> None:
    text = "\n".join(["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
                      "tail9w0", "-----END PRIVATE KEY-----", "after"])
    assert keep([("[c]", text)], None, 3, 1000)[0] == [f"[c] {R}", f"[c] {R}", "[c] after"]
