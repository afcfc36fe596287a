"""The quality-against-time plot: which points it labels, and that it draws every kind of row."""
from difflab.viz.study_plot import pareto_front, plot_quality_vs_time


def test_the_pareto_front_keeps_the_points_no_other_beats_on_time_and_value():
    points = [(1.0, 5.0), (2.0, 3.0), (2.0, 4.0), (0.5, 9.0), (3.0, 3.5), (3.0, 1.0)]
    assert pareto_front(points) == {0, 1, 3, 5}
    assert pareto_front([]) == set()


def test_a_large_ablation_plots_with_a_log_axis_and_a_legend(tmp_path):
    rows = [{"label": f"row {i}", "kind": ("warm", "plain", "prior")[i % 3], "sampler": ("ddpm", "ddim", "prior")[i % 3],
             "seconds": 0.1 * (i + 1), "metrics": {"distance": {"value": 10.0 ** (i % 4)}, "kid": {"value": None}}}
            for i in range(20)]
    document = {"rows": rows, "num_images": 10, "device": "cpu", "scoring": {"distance": "FD", "extractor": "x"}}
    path = plot_quality_vs_time(document, tmp_path / "plot.png")
    assert path.stat().st_size > 10_000
