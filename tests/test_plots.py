"""Charts: valid SVG/PNG files holding the expected curves with the runs' own numbers."""
from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET

import pytest

from backtrace.errors import UsageError
from backtrace.training import descend
from backtrace.training.plots import descent_figure, gradient_flow, loss_curves, save

SVG = "{http://www.w3.org/2000/svg}"


def gids(fig, prefix: str, axis: int = 0) -> list:
    return [line for line in fig.axes[axis].get_lines() if (line.get_gid() or "").startswith(prefix)]


def svg_groups(path, prefix: str) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return [g.get("id") for g in root.iter(f"{SVG}g") if (g.get("id") or "").startswith(prefix)]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_learning_rate_chart_has_one_curve_per_rate(tmp_path):
    runs = [descend("L = (w - 3)**2", {"w": 0.0}, lr=lr, steps=60, label=f"lr={lr:g}")
            for lr in (0.0001, 0.01, 10)]
    fig = descent_figure(runs)
    curves = gids(fig, "curve-")
    assert len(curves) == 3
    top = 1e3 * 9.0  # a thousand times the highest starting loss, (0 - 3)**2
    for line, run in zip(curves, runs):
        ys = list(line.get_ydata())
        assert len(ys) == len(run.losses)
        assert all(y == v or (math.isnan(y) and not abs(v) <= top) for y, v in zip(ys, run.losses))
        assert run.label in line.get_label() and str(run.verdict) in line.get_label()
    assert len(gids(fig, "path-", 1)) == 3 and len(gids(fig, "function", 1)) == 1
    out = tmp_path / "rates.svg"
    save(fig, out)
    assert sorted(svg_groups(out, "curve-")) == ["curve-0", "curve-1", "curve-2"]
    assert sorted(svg_groups(out, "path-")) == ["path-0", "path-1", "path-2"]


def test_contour_with_paths_as_png(tmp_path):
    from matplotlib.image import imread

    runs = [descend("L = (x - 1)**2 + 10*(y + x)**2", {"x": -2.0, "y": 2.0}, lr=0.04, steps=30,
                    optimizer=o, label=o) for o in ("sgd", "adam")]
    fig = descent_figure(runs)
    paths = gids(fig, "path-", 1)
    assert len(paths) == 2
    assert list(paths[0].get_xdata()) == [p["x"] for p in runs[0].path]
    assert list(paths[1].get_ydata()) == [p["y"] for p in runs[1].path]
    assert fig.axes[1].collections, "the contour lines are drawn"
    out = tmp_path / "paths.png"
    save(fig, out)
    width, height = png_size(out)
    assert imread(out).shape[:2] == (height, width) and width > 500 and height > 200


def test_three_variables_draw_only_the_loss():
    run = descend("L = x**2 + y**2 + z**2", {"x": 1.0, "y": 2.0, "z": 3.0}, steps=5)
    fig = descent_figure([run])
    assert len(fig.axes) == 1 and len(gids(fig, "curve-")) == 1


def test_gradient_flow_one_line_per_layer(tmp_path):
    fig = gradient_flow([1, 2, 3], {"0": [1.0, 0.5, 0.25], "2": [2.0, 1.0, 0.0]},
                        {"0": [1e-3, 1e-3, 1e-3], "2": [1e-2, 1e-2, 1e-2]})
    layers = gids(fig, "layer-")
    assert [line.get_gid() for line in layers] == ["layer-0", "layer-2"]
    assert math.isnan(layers[1].get_ydata()[2])  # a zero norm has no place on a log axis
    assert len(gids(fig, "ratio-", 1)) == 2
    out = tmp_path / "flow.svg"
    save(fig, out)
    assert sorted(svg_groups(out, "layer-")) == ["layer-0", "layer-2"]


def test_watch_charts(tmp_path):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(64, 2)
    import backtrace

    with backtrace.watch(model, opt) as w:
        for _ in range(5):
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            opt.step()
    w.plot(tmp_path / "loss.svg")
    w.plot_gradient_flow(tmp_path / "flow.png")
    assert svg_groups(tmp_path / "loss.svg", "curve-") == ["curve-0"]
    assert png_size(tmp_path / "flow.png")[0] > 0
    fig = w.gradient_flow_figure()
    assert [line.get_gid() for line in gids(fig, "layer-")] == ["layer-0", "layer-2"]
    assert list(gids(fig, "layer-")[0].get_ydata()) == [s.layers["0"] for s in w.steps]


def test_a_diverged_run_leaves_the_chart_instead_of_flattening_the_others():
    runs = [descend("L = (w - 3)**2", {"w": 0.0}, lr=lr, steps=300, label=f"lr={lr:g}")
            for lr in (0.0001, 0.01, 10)]
    assert runs[2].losses[-1] > 1e200 or not math.isfinite(runs[2].losses[-1])  # it diverged
    fig = descent_figure(runs)
    low, high = fig.axes[0].get_ylim()
    assert high < 1e5 and low < min(runs[1].losses) * 10  # the converging curves keep the scale
    (mark,) = gids(fig, "off-chart-2")
    first = next(k for k, v in enumerate(runs[2].losses) if not v <= 9e3)
    assert list(mark.get_xdata()) == [first] and list(mark.get_ydata()) == [9e3]  # where it left
    assert gids(fig, "off-chart-0") == [] and gids(fig, "off-chart-1") == []


def test_overlapping_paths_are_told_apart():
    runs = [descend("L = (x - 1)**2 + 10*(y + x)**2", {"x": -2.0, "y": 2.0}, lr=0.02, steps=20,
                    optimizer=o, label=o) for o in ("sgd", "adam")]
    sgd, adam = gids(descent_figure(runs), "path-", 1)
    assert sgd.get_marker() != adam.get_marker() and sgd.get_linestyle() != adam.get_linestyle()
    assert adam.get_markerfacecolor() == "none" and sgd.get_zorder() > adam.get_zorder()


def test_watch_charts_number_steps_from_1_and_name_layer_types():
    import torch

    import backtrace

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(16, 2)
    with backtrace.watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            opt.step()
    assert [s.step for s in w.steps] == [1, 2, 3]
    (curve,) = gids(w.loss_figure(), "curve-")
    assert list(curve.get_xdata()) == [1, 2, 3]  # as the step table numbers them
    flow = w.gradient_flow_figure()
    assert [line.get_label() for line in gids(flow, "layer-")] == ["0 (Linear)", "2 (Linear)"]
    assert list(gids(flow, "layer-")[0].get_xdata()) == [1, 2, 3]


def test_save_refuses_unknown_suffix_and_leaves_no_temp_files(tmp_path):
    fig = loss_curves({"a": [3.0, 2.0, 1.0]})
    with pytest.raises(UsageError, match="chart format"):
        save(fig, tmp_path / "chart.gif")
    save(fig, tmp_path / "chart.svg")
    assert [p.name for p in tmp_path.iterdir()] == ["chart.svg"]
