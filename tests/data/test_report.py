"""The curation report, including when nothing is left."""
import json

import pytest

from alaya.data.curate import run_curate


def test_when_every_document_is_filtered_out_the_report_says_which_stage_did_it(tmp_path):
    docs = tmp_path / "short.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": f"Too short a page, number {i}.", "meta": {"lang": "en"}}) + "\n"
                            for i in range(20)), encoding="utf-8")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  - stage: normalize\n  - stage: filter\n    gopher: {min_words: 50}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"stage 2 'filter' removed the last 20") as err:
        run_curate(str(cfg), [str(docs)], str(tmp_path / "out"))
    report = (tmp_path / "out" / "report" / "report.md").read_text(encoding="utf-8")
    assert "stage 2 'filter' removed the last 20" in report and "report.md" in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()  # not "finished": a fixed config can run again


def test_the_report_has_its_tables_and_charts_and_no_empty_quality_panel(dup_input, tmp_path):
    import matplotlib.image

    inputs, _ = dup_input
    m = run_curate(None, inputs, str(tmp_path / "out"))
    text = (tmp_path / "out" / "report" / "report.md").read_text(encoding="utf-8")
    for table in ("| stage | in | kept | removed | quarantined |", "| language | available | target | achieved |",
                  "| source | sampling weight | epochs |"):
        assert table in text
    assert m["documents_out"] > 0 and (tmp_path / "out" / "report" / "shares.png").stat().st_size > 0
    # no quality stage in the default pipeline: the histogram figure is the length panel alone (one panel wide)
    width = matplotlib.image.imread(tmp_path / "out" / "report" / "histograms.png").shape[1]
    assert width == 550


def test_small_pie_slices_go_to_the_legend_and_length_ticks_are_decades():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alaya.data.curate import LENGTH_EDGES
    from alaya.data.report import _pie, _short

    fig, ax = plt.subplots()
    _pie(ax, {"news": 900, "web": 80, "wiki": 10, "book": 5, "forum": 4, "qa": 1, "empty": 0}, "by type")
    labels = [t.get_text() for t in ax.texts if t.get_text()]
    assert sorted(labels) == ["8.0%", "90.0%", "news", "web"]  # the four slices under 3 % are not labelled on the pie
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "news 90.0 %", "web 8.0 %", "wiki 1.0 %", "book 0.5 %", "forum 0.4 %", "qa 0.1 %"]
    plt.close(fig)
    assert [_short(e) for e in LENGTH_EDGES if e >= 10 and str(e).rstrip("0") == "1"] == [
        "10", "100", "1k", "10k", "100k", "1M", "10M"]
