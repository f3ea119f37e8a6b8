"""The interactive explorer (`-o page.html`): one self-contained page, its data checked against
torch and hand-derived numbers, and the page driven in headless Chromium: open, unfold and fold in
place, search, click, no console errors; screenshots at 1,920 and 1,280 pixels wide."""
from __future__ import annotations

import math
import re
import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import backtrace
from backtrace.cli import cli
from backtrace.errors import LimitError
from backtrace.fold import layout, visible_graph
from backtrace.render.explorer import explorer_html
from backtrace.render.explorer_data import initial_depth, number
from backtrace.render.formats import export
from backtrace.render.options import Options
from backtrace.traces import Edge, Step, Trace, TraceNode
from backtrace.values import format_number

from . import traced
from .conftest import NEURON, TEXTBOOK
from .pages import Page, artifacts, browser, console_errors, open_page, page_data

FANOUT = ("a = x * x; b = x + 1; f = a * b", {"x": 3.0})  # ∂f/∂x = 9 + 12 + 12 = 33
ROOT = Path(__file__).parent.parent


# ---------------------------------------------------------------- the 12-layer transformer

@pytest.fixture(scope="module")
def transformer():
    """A traced 12-layer TransformerEncoder, its torch twin's per-layer boundary gradients (from
    backward hooks) and the model itself, whose .grad fields torch filled."""
    return traced.transformer(oracle=True)


@pytest.fixture(scope="module")
def transformer_page(transformer, tmp_path_factory):
    path = tmp_path_factory.mktemp("explorer") / "model.html"
    export(transformer[0], path)
    return path


def test_page_is_one_self_contained_file_under_5_mb(transformer_page):
    text = transformer_page.read_text(encoding="utf-8")
    assert transformer_page.stat().st_size < 5_000_000
    page = Page(text)
    assert page.fetching == []  # no src= or href= anywhere: nothing is loaded from elsewhere
    assert not {"link", "img", "iframe", "object", "embed"} & set(page.tags)
    kinds = [kind for kind, _ in page.scripts]
    assert kinds[0] == "application/json" and set(kinds[1:]) == {"text/javascript"}
    code = "".join(text for kind, text in page.scripts[1:])
    assert "Viz.instance" in code and "BT.Model" in code  # the layout engine and the page, inline


def test_page_data_agrees_with_torch(transformer, transformer_page):
    trace, oracle, model = transformer
    data = page_data(transformer_page.read_text(encoding="utf-8"))
    assert len(data["nodes"]) == len(trace.nodes) and len(data["steps"]) == len(trace.steps)
    nodes = {n["id"]: n for n in data["nodes"]}
    for name, p in model.named_parameters():  # every parameter's gradient, as torch has it
        assert nodes[name]["grad"]["norm"] == pytest.approx(float(p.grad.norm()), rel=1e-5), name
        assert nodes[name]["grad"]["shapeText"] == "[" + "×".join(map(str, p.shape)) + "]"
    modules = {m["path"]: m for m in data["modules"]}
    for k, (grad_in, grad_out) in enumerate(oracle):  # each block's boundary, from torch's hooks
        assert modules[f"layers.{k}"]["gradIn"]["norm"] == pytest.approx(grad_in, rel=1e-5)
        assert modules[f"layers.{k}"]["gradOut"]["norm"] == pytest.approx(grad_out, rel=1e-5)
    assert len(modules["layers.3"]["params"]) == 12  # in_proj w, b; out_proj; 2 linears; 2 norms


def test_opens_folded_at_the_deepest_depth_that_shows_few_boxes(transformer):
    trace = transformer[0]
    g = visible_graph(trace, ())
    sizes = {d: len(layout(g, d, []).order) for d in (1, 2, 3)}
    assert sizes[2] <= 40 < sizes[3]  # 12 blocks fit the screen; their insides do not
    assert initial_depth(g, None) == 2 and initial_depth(g, 3) == 3
    with pytest.raises(LimitError, match="over the budget of 20"):
        initial_depth(g, 3, budget=20)


def test_hide_and_forward_mode_reach_the_page(transformer):
    trace = transformer[0]
    data = page_data(explorer_html(trace, Options(hide=("accumulate",), mode="forward")))
    assert all(n["kind"] != "input" for n in data["nodes"])
    assert data["hidden"] == sum(n.kind == "input" for n in trace.nodes) and data["mode"] == "forward"
    kept = {n["id"] for n in data["nodes"]}
    assert all(e["input"] in kept for s in data["steps"] for e in s["edges"])


def test_formula_page_data_is_the_chain_rule():
    data = page_data(explorer_html(backtrace.explain(FANOUT[0], **FANOUT[1])))
    x = next(n for n in data["nodes"] if n["id"] == "x")
    assert x["grad"]["num"] == 33 and x["gradText"] == "(9) + (12) + (12) = 33"
    assert [s["node"] for s in data["steps"]] == ["f", "b", "a"]
    assert data["steps"][0]["caption"] == "step 1 of 3: f sends its gradient to a, b"
    sent = [(s["node"], e["contribution"]["num"]) for s in data["steps"] for e in s["edges"]
            if e["input"] == "x"]
    assert sent == [("b", 9), ("a", 12), ("a", 12)]  # b = x + 1 sends 9 · 1; a = x·x sends 4 · 3 twice


def nan_trace() -> Trace:
    """f = exp(x) overflowed: f is inf, and x's gradient inf · 1 came out NaN."""
    nodes = (TraceNode("x", "input", (), "input", 1e308, math.nan, "input"),
             TraceNode("f", "exp", ("x",), "exp(x)", math.inf, 1.0, "op"))
    steps = (Step(0, "f", 1.0, (Edge(0, "x", math.inf, "exp(x)", math.nan),)),)
    return Trace("reference", "f", nodes, steps, {"formula": "f = exp(x)"})


def test_non_finite_numbers_travel_as_strict_json():
    data = page_data(explorer_html(nan_trace()))
    x, f = data["nodes"]
    assert x["grad"] == {"text": "nan", "norm": "NaN", "num": "NaN"}
    assert f["value"]["num"] == "Infinity" and "gradText" not in x  # the same as grad's text
    assert [number(v) for v in (math.nan, math.inf, -math.inf, 2.5, None)] == \
        ["NaN", "Infinity", "-Infinity", 2.5, None]


def test_the_wheel_ships_every_asset_and_the_licence():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["backtrace.render"]
    assets = files("backtrace.render") / "assets"
    names = sorted(p.name for p in assets.iterdir())
    assert {"viz-global.js", "LICENSE-viz.txt", "explorer.css", "app.js"} <= set(names)
    for name in names:
        assert any(fnmatch(f"assets/{name}", g) for g in globs), f"{name} is not package data"
    licence = (assets / "LICENSE-viz.txt").read_text()
    assert "Viz.js 3.31.0".lower() in licence.lower() or "@viz-js/viz 3.31.0" in licence
    assert "Eclipse Public License - v 2.0" in licence and "MIT" in licence
    assert (assets / "viz-global.js").read_text().startswith("/*!\nViz.js 3.31.0")


# ---------------------------------------------------------------- in Chromium

@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = browser(tmp_path_factory.mktemp("chrome-profile"))
    yield d
    d.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return artifacts(tmp_path_factory)


def shoot(driver, shots: Path, name: str, width: int) -> Path:
    """A screenshot at `width` pixels: the page refits, or keeps the selection in the middle."""
    driver.set_window_size(width, 1200 if width > 1500 else 900)
    driver.execute_script(
        "window.dispatchEvent(new Event('resize'));"
        "var s = backtrace.selection;"
        "if (s && s.type === 'node') backtrace.view.show(backtrace.model.elementOf(s.id), true)")
    path = shots / f"{name}-{width}.png"
    driver.save_screenshot(str(path))
    return path


def shown(driver) -> set[str]:
    return set(driver.execute_script("return Array.from(backtrace.view.items.keys())"))


def screen_box(driver, css: str) -> dict:
    return driver.execute_script(
        "var r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {x: r.left, y: r.top, w: r.width, h: r.height}", css)


def test_transformer_opens_folded_and_unfolds_in_place(driver, transformer, transformer_page,
                                                       shots):
    from selenium.webdriver.common.action_chains import ActionChains

    trace = transformer[0]
    driver.set_window_size(1920, 1200)
    open_page(driver, transformer_page)
    g = visible_graph(trace, ())
    assert shown(driver) == set(layout(g, 2, []).order)  # the page folds as backtrace.fold does
    assert "[layers.3]" in shown(driver) and len(shown(driver)) <= 40
    assert overlapping_texts(driver) == []
    shoot(driver, shots, "transformer-folded", 1280)
    shoot(driver, shots, "transformer-folded", 1920)
    box = screen_box(driver, '.element[data-id="[layers.3]"] .frame')
    ActionChains(driver).double_click(driver.find_element(
        "css selector", '.element[data-id="[layers.3]"]')).perform()
    assert shown(driver) == set(layout(g, 2, []).order) - {"[layers.3]"} | {
        e for e in layout(g, 3, []).order if e.startswith(("[layers.3.", )) or
        (not e.startswith("[") and trace.node(e).module == "layers.3")}
    minimap = driver.find_element("id", "minimap")  # the graph is taller than the window now
    assert minimap.is_displayed()
    before = driver.find_element("id", "scene").get_attribute("transform")
    opened = screen_box(driver, '.cluster[data-path="layers.3"] > rect')
    assert abs(opened["x"] - box["x"]) < 1.5 and abs(opened["y"] - box["y"]) < 1.5  # in place
    assert overlapping_texts(driver) == []
    shoot(driver, shots, "transformer-unfolded", 1920)
    ActionChains(driver).move_to_element_with_offset(minimap, 0, minimap.size["height"] // 2 - 4) \
        .click().perform()  # near its bottom: the view goes to the end of the graph
    assert driver.find_element("id", "scene").get_attribute("transform") != before
    driver.execute_script("backtrace.goToModule('layers.3')")  # back to it, still unfolded
    driver.find_element("css selector", '.cluster[data-path="layers.3"] .header text').click()
    assert shown(driver) == set(layout(g, 2, []).order)  # folded again
    assert console_errors(driver) == []


def test_search_finds_a_parameter_and_the_inspector_shows_torchs_numbers(driver, transformer,
                                                                          transformer_page, shots):
    from selenium.webdriver.common.keys import Keys

    trace, _, model = transformer
    open_page(driver, transformer_page)
    body = driver.find_element("tag name", "body")
    body.send_keys("/")  # the key that focuses the search box
    search = driver.switch_to.active_element
    assert search.get_attribute("id") == "search"
    search.send_keys("layers.3.linear1.weight")
    first = driver.find_element("css selector", "#results li .name")
    assert first.text == "layers.3.linear1.weight"
    search.send_keys(Keys.ENTER)
    panel = driver.find_element("id", "panel")
    assert panel.find_element("tag name", "h2").text == "layers.3.linear1.weight"
    assert "layers.3.linear1.weight" in shown(driver)  # its modules were unfolded to show it
    torch_norm = float(model.layers[3].linear1.weight.grad.norm())
    assert stat(panel, "Gradient", "‖·‖ (L2 norm)") == pytest.approx(torch_norm, rel=1e-5)
    shoot(driver, shots, "transformer-search", 1920)
    shoot(driver, shots, "transformer-search", 1280)
    # Click its consumer: the step that sends the weight its gradient, edge by edge.
    consumer = next(n for n in trace.nodes if "layers.3.linear1.weight" in n.inputs)
    driver.set_window_size(1920, 1200)
    driver.execute_script("backtrace.view.show(arguments[0], true, 1)", consumer.id)
    driver.find_element("css selector", f'.element[data-id="{consumer.id}"]').click()
    step = next(s for s in trace.steps if s.node == consumer.id)
    rows = panel.find_elements("css selector", "section:last-of-type tbody tr")
    assert len(rows) == len(step.edges)
    sent = next(r for r in rows if r.find_element("tag name", "td").text.startswith("layers.3"))
    assert norm_in(sent.find_elements("tag name", "td")[2].text) == pytest.approx(torch_norm,
                                                                                 rel=1e-5)
    assert "Upstream" in panel.text
    assert console_errors(driver) == []


def stat(panel, section: str, row: str) -> float:
    """A number from a row of an inspector section, e.g. the gradient's L2 norm."""
    for sec in panel.find_elements("tag name", "section"):
        if sec.find_element("tag name", "h3").text.startswith(section):
            for tr in sec.find_elements("tag name", "tr"):
                cells = tr.find_elements("tag name", "td")
                if cells and cells[0].text == row:
                    return float(cells[1].text)
    raise AssertionError(f"no {row} in {section}: {panel.text}")


def norm_in(text: str) -> float:
    """The norm in a value's text: '[128×64] ‖·‖=6.06741e-07' -> 6.06741e-07."""
    return float(re.search(r"‖·‖=(\S+)", text).group(1))


@pytest.mark.parametrize("name, formula", [("textbook", TEXTBOOK), ("neuron", NEURON),
                                           ("fanout", FANOUT)])
def test_formula_pages_read_like_the_board(driver, tmp_path, shots, name, formula):
    page = tmp_path / f"{name}.html"
    values = [f"{k}={v}" for k, v in formula[1].items()]
    result = CliRunner().invoke(cli, ["explain", formula[0], *values, "-o", str(page)])
    assert result.exit_code == 0, result.output
    driver.set_window_size(1920, 1200)
    open_page(driver, page)
    t = backtrace.explain(formula[0], **formula[1])
    assert shown(driver) == {n.id for n in t.nodes}  # a small graph: every node, nothing folded
    if name == "textbook":  # all of it in view: no minimap
        assert not driver.find_element("id", "minimap").is_displayed()
    texts = driver.execute_script("return document.getElementById('graph').textContent")
    for s in t.steps:  # every wire shows upstream × local = contribution
        for e in s.edges:
            if e.contribution is not None:
                assert f"× {backtrace.values.describe(e.local)} = " \
                       f"{backtrace.values.describe(e.contribution)}" in texts
    assert overlapping_texts(driver) == []
    shoot(driver, shots, name, 1920)
    shoot(driver, shots, name, 1280)
    assert console_errors(driver) == []


def overlapping_texts(driver) -> list:
    """Pairs of texts of the graph whose boxes, as the browser drew them, overlap."""
    return driver.execute_script("""
        const boxes = Array.from(document.querySelectorAll('#graph text'))
          .filter(t => t.textContent.trim()).map(t => [t.textContent, t.getBoundingClientRect()]);
        const hits = [];
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
          const [a, p] = boxes[i], [b, q] = boxes[j];
          const dx = Math.min(p.right, q.right) - Math.max(p.left, q.left);
          const dy = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
          if (dx > 1 && dy > 1) hits.push([a, b]);
        }
        return hits;""")


def test_clicking_x_shows_what_each_consumer_sends(driver, tmp_path):
    page = tmp_path / "fanout.html"
    export(backtrace.explain(FANOUT[0], **FANOUT[1]), page)
    open_page(driver, page)
    driver.find_element("css selector", '.element[data-id="x"]').click()
    panel = driver.find_element("id", "panel")
    assert "(9) + (12) + (12) = 33" in panel.text
    upstream = [s for s in panel.find_elements("tag name", "section")
                if s.find_element("tag name", "h3").text.startswith("Upstream")][0]
    rows = [[td.text for td in tr.find_elements("tag name", "td")]
            for tr in upstream.find_elements("css selector", "tbody tr")]
    assert [(r[0], r[2]) for r in rows] == [("b", "9"), ("a", "12"), ("a", "12")]
    linked = driver.find_elements("css selector", ".wire.linked")
    assert len(linked) == 3  # x's three wires are highlighted
    driver.find_element("css selector", '.element[data-id="b"]').click()
    assert "∂b/∂x = 1" in panel.text and "Backward step 2 of 3" in panel.text
    assert console_errors(driver) == []


def test_numbers_read_as_the_tables_write_them(driver, tmp_path):
    page = tmp_path / "textbook.html"
    export(backtrace.explain(TEXTBOOK[0], **TEXTBOOK[1]), page)
    open_page(driver, page)
    values = [0.19661193324148185, 1.6910703379835468e-06, 1e-05, 0.0001, 0.00012345678, -4.0,
              123456.7, 1234567.0, 999999.5, 1e21, 2.5e-300, -0.5, 7]
    shown = driver.execute_script("return arguments[0].map(v => BT.number(v))", values)
    assert shown == [format_number(v) for v in values]
    assert driver.execute_script("return ['NaN', 'Infinity', '-Infinity'].map(BT.number)") == \
        [format_number(v) for v in (math.nan, math.inf, -math.inf)]


def test_a_panel_is_one_data_function_and_one_script(driver, tmp_path, monkeypatch):
    """The extension point later panels (a NaN report, a diff, a heatmap) use: registered in
    Python with its data, drawn by its own script, shown as a tab next to the built-in ones."""
    from backtrace.render import explorer

    script = """BT.panel({id: "leaves", title: "Leaves", render: function (el, app) {
      el.appendChild(BT.h("p", {id: "leaves", text: app.data.panels.leaves.join(",")}));
    }});"""
    monkeypatch.setattr(explorer, "PANELS", dict(explorer.PANELS))
    real = explorer.asset
    monkeypatch.setattr(explorer, "asset", lambda name: script if name == "leaves.js" else real(name))
    explorer.panel("leaves", "leaves.js")(lambda trace, opts: sorted(trace.grads))
    page = tmp_path / "panel.html"
    export(backtrace.explain(TEXTBOOK[0], **TEXTBOOK[1]), page)
    assert page_data(page.read_text(encoding="utf-8"))["panels"] == {"leaves": ["x", "y", "z"]}
    open_page(driver, page)
    driver.find_element("id", "tab-leaves").click()
    assert driver.find_element("id", "leaves").text == "x,y,z"
    assert console_errors(driver) == []


def test_a_nan_gradient_is_marked(driver, tmp_path):
    page = tmp_path / "nan.html"
    export(nan_trace(), page, colour="grad")
    open_page(driver, page)
    x = driver.find_element("css selector", '.element[data-id="x"]')
    assert "nonfinite" in x.get_attribute("class") and "nan" in x.text
    assert console_errors(driver) == []


def test_hostile_names_stay_text_in_the_browser(driver, tmp_path):
    from .test_output_safety import EVIL, evil_trace

    page = tmp_path / "evil.html"
    export(evil_trace(), page)
    open_page(driver, page)
    assert driver.execute_script("return document.querySelectorAll('script').length") == \
        len(Page(page.read_text(encoding="utf-8")).scripts)
    assert driver.execute_script("return document.querySelectorAll('#graph image, #graph b')"
                                 ".length") == 0
    assert driver.find_element("css selector", ".brand .title").text == EVIL[0]
    assert console_errors(driver) == []


def test_a_node_whose_saved_tensors_were_not_read_shows_why():
    """A custom Function's ctx (and checkpointing) leaves a note instead of saved tensors."""
    from .test_tracer import Cube

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        Cube.apply(x).sum().backward()
    cube = next(n for n in t.trace.nodes if n.op == "cube")
    assert isinstance(cube.meta["saved"], str)
    nodes = {n["id"]: n for n in page_data(explorer_html(t.trace))["nodes"]}
    assert nodes[cube.id]["saved"] == {"": cube.meta["saved"]}
