"""Figures: Recall@N curves from per-query first hits, frame colours of ranked-list galleries, byte-stable PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.colors import to_rgba
from PIL import Image

from benchmarks.commands.main import cli
from benchmarks.evaluation.results import RESULTS_DIR, write_result
from benchmarks.reports import matching, plots
from benchmarks.reports.reported import load_all
from datasets.base import PlaceGroundTruth, RevisitedGroundTruth
from tests.test_tables import toy_result


def test_recall_curve_counts_first_hits_up_to_each_n():
    result = toy_result("pitts30k", "recall", {"recall@1": 0.25, "recall@5": 0.75},
                        per_query={"first_hit": [1, 3, None, 2]})
    ns, recall = plots.recall_curve(result)
    assert ns.tolist() == [1, 2, 3, 4, 5] and recall.tolist() == [25.0, 50.0, 75.0, 75.0, 75.0]


def test_committed_curves_end_where_their_metrics_say():
    for path, result in matching.load_results(RESULTS_DIR):
        if result.protocol == "recall":
            ns, recall = plots.recall_curve(result)
            for n in (1, 5, 10, 20):
                assert recall[n - 1] == pytest.approx(100 * result.metrics[f"recall@{n}"]), path


REVISITED = RevisitedGroundTruth(n_db=5, easy=[[0], [3]], hard=[[1], []], junk=[[2], []])


@pytest.mark.parametrize(("setting", "kinds"), [
    ("medium", ["positive", "positive", "junk", "negative", "negative"]),
    ("easy", ["positive", "junk", "junk", "negative", "negative"]),
    ("hard", ["junk", "positive", "junk", "negative", "negative"]),
])
def test_frames_follow_the_revisited_setting(setting, kinds):
    assert plots.frame_kinds(REVISITED, 0, np.arange(5), setting) == kinds


def test_place_frames_are_positive_within_the_threshold():
    gt = PlaceGroundTruth(utm_db=np.array([[0.0, 0.0], [0.0, 25.0], [0.0, 25.5]]), utm_queries=np.array([[0.0, 0.0]]))
    assert plots.frame_kinds(gt, 0, np.array([2, 1, 0])) == ["negative", "positive", "positive"]


def test_row_scores_are_the_protocol_scores_of_the_whole_ranking():
    ranks = np.array([[3, 1, 2, 0, 4], [4, 2, 1, 0, 3]])  # junk 2 removed: query 0's positives 0, 1 at 2nd, 3rd
    assert plots.row_scores(REVISITED, ranks, [0, 1], "medium") == ["AP 41.7", "AP 10.0"]  # trapezoid: (0 + 1/5) / 2
    assert plots.row_scores(REVISITED, ranks[:1], [0], "hard") == ["AP 25.0"]  # 1 behind 3 (0, 2 junk): (0 + 1/2) / 2
    assert plots.row_scores(REVISITED, ranks[1:], [1], "hard") == ["no positive"]
    places = PlaceGroundTruth(utm_db=np.array([[0.0, 0.0], [0.0, 25.0], [0.0, 99.0]]),
                              utm_queries=np.array([[0.0, 0.0], [500.0, 0.0]]))
    assert plots.row_scores(places, np.array([[2, 1, 0], [0, 1, 2]]), [0, 1]) == ["first hit #2", "no positive"]


def test_gallery_shows_each_query_then_its_ranked_list_framed(tmp_path):
    paths = []
    for i, colour in enumerate(["red", "green", "blue", "yellow", "white", "black", "grey"]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (16, 12), colour).save(paths[-1])
    db = np.eye(5, dtype=np.float32)
    queries = np.array([[1.0, 0.9, 0.8, 0.7, 0.0], [0.0, 0.0, 0.0, 1.0, 0.5]], dtype=np.float32)
    figure = plots.gallery_figure(paths[:5], paths[5:], REVISITED, db, queries, [1, 0], cropped=False, title="t",
                                  top=4)
    axes = figure.axes
    assert len(axes) == 2 * 5 and [a.get_title() for a in axes[:5]] == ["query 1: AP 100.0", "#1", "#2", "#3", "#4"]
    assert axes[5].get_title() == "query 0: AP 100.0"  # medium: 0 and 1 first, junk 2 ignored
    assert [a.get_xlabel() for a in axes[:5]] == ["6.png", "3.png", "4.png", "0.png", "1.png"]  # each image's file
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["query", "positive", "negative", "junk"]
    assert legend.legend_handles[0].get_edgecolor() == to_rgba(plots.QUERY_COLOUR) == to_rgba(
        axes[0].spines["top"].get_edgecolor())
    colour = {kind: to_rgba(c) for kind, c in plots.FRAME_COLOURS.items()}
    frames = [a.spines["top"].get_edgecolor() for a in axes]
    assert frames[1:5] == [colour["positive"], colour["negative"], colour["negative"], colour["negative"]]  # 3, 4, 0, 1
    assert frames[6:10] == [colour["positive"], colour["positive"], colour["junk"], colour["negative"]]  # 0, 1, 2, 3
    shown = axes[6].get_images()[0].get_array()
    assert tuple(shown[0, 0]) == (255, 0, 0)  # query 0's first image is database image 0 (red)


def test_pngs_are_byte_stable_and_carry_no_timestamp(tmp_path):
    results = [r for _, r in matching.load_results(RESULTS_DIR) if r.dataset == "synth_places"]
    frame = matching.long_frame(load_all(), matching.load_results(RESULTS_DIR))
    first = plots.save(plots.recall_figure("synth_places", results, frame), tmp_path / "a.png").read_bytes()
    second = plots.save(plots.recall_figure("synth_places", results, frame), tmp_path / "b.png").read_bytes()
    assert first == second and first.startswith(b"\x89PNG") and b"Software" not in first
    landmarks = [r for _, r in matching.load_results(RESULTS_DIR) if r.dataset == "synth_landmarks"]
    bars = plots.map_figure("synth_landmarks", landmarks, frame)
    assert len(bars.axes[0].patches) == 3 * len(landmarks)
    assert Path(plots.save(bars, tmp_path / "m.png")).stat().st_size > 10_000


def test_reported_recalls_are_drawn_as_crosses_beside_our_curve():
    result = toy_result("pitts250k", "recall", {"recall@1": 0.25, "recall@5": 0.75},
                        per_query={"first_hit": [1, 3, None, 2]})
    frame = matching.long_frame([], [("pitts250k/toy/resnet50.ours.json", result)])
    reported = frame.iloc[:2].assign(table="Table 1", row="vgg16, 4096-D", reported=[80.0, 90.0], weights="",
                                     reproduced=float("nan"))
    figure = plots.recall_figure("pitts250k", [result], pd.concat([frame, reported]))
    ours, theirs = figure.axes[0].get_lines()
    assert ours.get_ydata().tolist() == [25.0, 50.0, 75.0, 75.0, 75.0]
    assert (theirs.get_marker(), theirs.get_xdata().tolist(), theirs.get_ydata().tolist()) == ("x", [1, 5], [80, 90])
    assert theirs.get_label() == "toy Table 1: vgg16, 4096-D, reported"


def test_gallery_refuses_an_out_of_range_query_before_any_extraction(embedded_root, tmp_path, monkeypatch):
    import benchmarks.evaluation.evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("extracted before checking --queries")

    monkeypatch.setattr(benchmarks.evaluation.evaluate, "extract_descriptors", no_work)
    outcome = CliRunner().invoke(cli, ["plot", "gallery", "--method", "netvlad", "--weights", str(tmp_path / "w.pt"),
                                       "--dataset", "synth_landmarks", "--queries", "0,400,-1", "--root",
                                       str(embedded_root), "--out", str(tmp_path / "g.png")])
    assert outcome.exit_code == 2
    assert outcome.stderr == "error: --queries 400,-1: synth_landmarks has 20 queries (ids 0 to 19)\n"
    assert not (tmp_path / "g.png").exists()


def test_summary_refuses_a_dataset_without_results_naming_those_with_results(tmp_path):
    outcome = CliRunner().invoke(cli, ["plot", "summary", "--dataset", "synth_place", "--out", str(tmp_path)])
    assert outcome.exit_code == 2
    assert outcome.stderr == (f"error: {RESULTS_DIR}: --dataset synth_place: no results for it here; did you mean "
                              "synth_places, synth_landmarks? (datasets with results: photo_landmarks, "
                              "synth_landmarks, synth_places)\n")
    assert list(tmp_path.iterdir()) == []


def test_summary_draws_original_protocol_results_as_map_bars(tmp_path):
    results, reported = tmp_path / "results", tmp_path / "reported"
    reported.mkdir()
    write_result(toy_result("oxford5k", "oxford", {"map": 0.7755}, cropped=False), results)
    write_result(toy_result("roxford5k", "revisited", {"map_easy": 0.8, "map_medium": 0.6, "map_hard": 0.3}), results)
    outcome = CliRunner().invoke(cli, ["plot", "summary", "--results", str(results), "--reported", str(reported),
                                       "--out", str(tmp_path / "out"), "--dataset", "oxford5k"])
    assert outcome.exit_code == 0, outcome.output + outcome.stderr
    assert outcome.output == f"wrote {tmp_path / 'out' / 'map_oxford5k.png'}\n"
    figure = plots.map_figure("oxford5k", [toy_result("oxford5k", "oxford", {"map": 0.7755}, cropped=False)],
                              matching.long_frame([], []))
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["mAP"]
    assert [round(p.get_height(), 2) for p in figure.axes[0].patches] == [77.55]


def test_each_method_keeps_its_colour_its_variants_are_lighter_and_the_legend_covers_no_bar():
    frame = matching.long_frame(load_all(), matching.load_results(RESULTS_DIR))
    landmarks = [r for _, r in matching.load_results(RESULTS_DIR) if r.dataset == "synth_landmarks"]
    dolg_only = [r for r in landmarks if r.method == "dolg"]
    colours = {}
    for results in (landmarks, dolg_only):  # adding other methods' results changes no method's colour
        figure = plots.map_figure("synth_landmarks", results, frame)
        axes = figure.axes[0]
        for container, label in zip(axes.containers, [t.get_text() for t in axes.get_legend().get_texts()],
                                    strict=True):
            colours.setdefault(label, set()).add(tuple(container.patches[0].get_facecolor()))
        figure.canvas.draw()
        legend_box = axes.get_legend().get_window_extent()
        assert legend_box.x0 >= axes.get_window_extent().x1  # right of the plotting area
    assert all(len(c) == 1 for c in colours.values())
    assert plots.method_colour("dolg") == pytest.approx(to_rgba(plots.METHOD_COLOURS["dolg"])[:3])
    first, second = np.array(plots.method_colour("mscfp", 0)), np.array(plots.method_colour("mscfp", 1))
    assert (second > first).all()  # a lighter shade of the same colour
    spares = {tuple(np.round(to_rgba(c)[:3], 6)) for c in plots._SPARE_COLOURS}
    assert tuple(np.round(plots.method_colour("newmethod"), 6)) in spares  # an unlisted method gets a spare one
