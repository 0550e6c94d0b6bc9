"""The prepare summary every job prints after preparing."""
from ray_logmilp.cli.prepare import format_prepare_summary


def _manifest(**extra):
    return {"format": "bgl", "seconds": 1.5, "templates": 7,
            "lines": {"read": 10, "parsed": 9, "quarantined": 1, "quarantined_by_reason": {"nul_byte": 1}},
            "bags": {"total": 2, "by_split": {"train": {"positive": 1, "negative": 1, "unlabelled": 0}}}, **extra}


def test_the_summary_counts_lines_by_reason_and_says_nothing_of_inputs_when_none_were_skipped():
    text = format_prepare_summary(_manifest(inputs_skipped={"symlink_loops": [], "broken_links": [], "duplicates": 0}))
    assert "nul_byte: 1" in text and "inputs skipped" not in text


def test_the_summary_reports_symlink_loops_dangling_links_and_duplicate_names():
    skipped = {"symlink_loops": ["d/sub/up"], "broken_links": ["d/gone", "d/gone2"], "duplicates": 3}
    text = format_prepare_summary(_manifest(inputs_skipped=skipped))
    assert "1 symlink loop(s), 2 dangling link(s), 3 file(s) named more than once" in text
