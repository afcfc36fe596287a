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


def test_a_large_ablation_numbers_its_front_in_order_of_time_and_keys_the_numbers():
    from difflab.viz.study_plot import LABEL_ALL_UP_TO, point_labels
    few = [(1.0, 2.0, "a"), (2.0, 1.0, "b")]
    assert point_labels(few) == ({0: "a", 1: "b"}, [])
    # the front of these: (0.5, 9.0) "slow-start", then (1.0, 5.0), (2.0, 3.0), (3.0, 1.0); the rest are beaten
    many = [(1.0, 5.0, "p"), (2.0, 3.0, "q"), (2.0, 4.0, "r"), (0.5, 9.0, "s"), (3.0, 3.5, "t"), (3.0, 1.0, "u")]
    many += [(10.0 + i, 20.0, f"beaten {i}") for i in range(LABEL_ALL_UP_TO)]
    marks, key = point_labels(many)
    assert marks == {3: "1", 0: "2", 1: "3", 5: "4"}
    assert key == ["1: s", "2: p", "3: q", "4: u"]


def test_long_labels_and_unmeasured_rows_leave_the_layout_working(tmp_path):
    import warnings
    rows = [{"label": f"denoiser x{i} + DDPM-{i + 30} from t0=30, a long label", "kind": "warm", "sampler": "ddpm",
             "seconds": 0.1 * (i + 1), "metrics": {"distance": {"value": None}, "kid": {"value": 1.0 / (i + 1)}}}
            for i in range(30)]
    document = {"rows": rows, "num_images": 10, "device": "cpu", "scoring": {"distance": "FD", "extractor": "x"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Tight layout not applied" was one
        plot_quality_vs_time(document, tmp_path / "plot.png")
