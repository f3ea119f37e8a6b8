"""Backward replay: one SVG per step (--steps), and the replay mode of the HTML explorer page
driven in headless Chromium."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from backtrace import explain
from backtrace.cli import cli
from backtrace.errors import LimitError
from backtrace.render import replay
from backtrace.render.dot import ACTIVE_FILL
from backtrace.render.explorer import explorer_html
from backtrace.render.replay import frames, replay_html, write_steps

from .conftest import TEXTBOOK
from .pages import browser, console_errors, open_page, page_data

SVG = "{http://www.w3.org/2000/svg}"
FANOUT = ("a = x * x; b = x + 1; f = a * b", {"x": 3.0})  # steps: f, b, a; ∂f/∂x = 9 + 12 + 12


def node_groups(svg: bytes) -> dict[str, ET.Element]:
    """Graphviz node <g> elements by the name in their label's first (bold) text."""
    root = ET.fromstring(svg)
    found = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "node":
            texts = [t.text for t in g.iter(f"{SVG}text")]
            if texts:
                found[texts[0]] = g
    return found


def texts_of(group: ET.Element) -> list[str]:
    return [t.text or "" for t in group.iter(f"{SVG}text")]


def fill_of(group: ET.Element) -> str:
    """The fill of the node's outline (a path for rounded boxes, a polygon otherwise)."""
    return next(e.get("fill") for e in group.iter() if e.tag in (f"{SVG}path", f"{SVG}polygon"))


def test_one_svg_per_step_with_active_node_and_pending_gradients(tmp_path):
    t = explain(FANOUT[0], **FANOUT[1])
    paths = write_steps(t, tmp_path / "steps")
    assert [p.name for p in paths] == ["step-000.svg", "step-001.svg", "step-002.svg", "step-003.svg"]
    svgs = [p.read_bytes() for p in paths]
    # Before the backward pass: only the seed ∂f/∂f = 1; every other gradient is pending.
    first = node_groups(svgs[0])
    assert texts_of(first["f"])[-1] == "1"
    assert texts_of(first["x"])[-1] == "pending" and texts_of(first["a"])[-1] == "pending"
    # Step 2 runs b: b is highlighted, x has received b's 9 but still waits for a's two 12s.
    second = node_groups(svgs[2])
    assert fill_of(second["b"]).lower() == ACTIVE_FILL and fill_of(second["a"]).lower() != ACTIVE_FILL
    assert texts_of(second["x"])[-1] == "(9) + …"
    assert texts_of(second["a"])[-1] == "4"  # a's gradient b = 4 arrived at step 1
    # The last step runs a: x's gradient is complete, 9 + 12 + 12 = 33.
    last = node_groups(svgs[3])
    assert fill_of(last["a"]).lower() == ACTIVE_FILL
    assert texts_of(last["x"])[-1] == "(9) + (12) + (12) = 33"


def node_boxes(svg: bytes) -> dict[str, str]:
    """Each node's outline (its path or polygon coordinates), by DOT name."""
    root = ET.fromstring(svg)
    boxes = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "node":
            shape = next(e for e in g.iter() if e.tag in (f"{SVG}path", f"{SVG}polygon"))
            boxes[g.find(f"{SVG}title").text] = shape.get("d") or shape.get("points")
    return boxes


@pytest.mark.parametrize("formula, values", [
    FANOUT, ("1/(1+exp(-(w0*x0+w1*x1+w2)))", {"w0": 2, "x0": -1, "w1": -3, "x1": -2, "w2": -3})])
def test_every_frame_has_the_same_layout(formula, values):
    svgs = frames(explain(formula, **values))
    first = node_boxes(svgs[0])
    assert len(first) >= 5
    for k, svg in enumerate(svgs[1:], 1):
        assert node_boxes(svg) == first, f"frame {k} moved a node"
        assert ET.fromstring(svg).get("width") == ET.fromstring(svgs[0]).get("width")


def test_every_frame_has_the_same_layout_with_a_system_dot():
    from .test_pictures import system_dot

    dot = system_dot()
    from backtrace.render.options import Options

    svgs = frames(explain(FANOUT[0], **FANOUT[1]), Options(dot=dot))
    assert all(node_boxes(svg) == node_boxes(svgs[0]) for svg in svgs)


def test_html_icons_need_no_font():
    page = replay_html(explain(FANOUT[0], **FANOUT[1]))
    assert not re.search("[⏮⏭◀▶]", page)  # the buttons are drawn as SVG paths (BT.ICONS)
    assert "BT.ICONS" in page


def test_steps_through_the_cli(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "step-007.svg").write_text("from an older, longer replay")
    (tmp_path / "s" / "notes.txt").write_text("kept")
    result = CliRunner().invoke(cli, ["explain", "f=(x+y)*z", "--x", "-2", "--y", "5", "--z", "-4",
                                      "--steps", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == \
        ["notes.txt", "step-000.svg", "step-001.svg", "step-002.svg"]


def test_html_page_is_self_contained_and_carries_every_step():
    page = explorer_html(explain(TEXTBOOK[0], **TEXTBOOK[1]))
    data = page_data(page)
    assert [s["caption"] for s in data["steps"]] == [
        "step 1 of 2: f sends its gradient to %0, z", "step 2 of 2: %0 sends its gradient to x, y"]
    assert data["seedCaption"] == "step 0 of 2: seed ∂f/∂f = 1"
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)\s*=", page, re.I)
    assert "@import" not in page


def test_replay_refuses_a_pass_too_long_to_step_through(monkeypatch):
    monkeypatch.setattr(replay, "MAX_STEPS", 1)
    with pytest.raises(LimitError, match="more than a replay shows"):
        frames(explain(TEXTBOOK[0], **TEXTBOOK[1]))


# ---------------------------------------------------------------- a real browser

def test_html_replay_in_headless_chromium(tmp_path):
    """The replay is a mode of the explorer page: buttons and arrow keys step through the backward
    pass on one layout (nothing moves), gradients fill in as they arrive."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page = tmp_path / "replay.html"
    result = CliRunner().invoke(cli, ["explain", FANOUT[0], "x=3", "-o", str(page)])
    assert result.exit_code == 0, result.output
    driver = browser(tmp_path / "chrome-profile")
    try:
        open_page(driver, page)
        places = driver.execute_script(PLACES)
        driver.find_element(By.ID, "mode-replay").click()
        counter = driver.find_element(By.ID, "counter")
        assert counter.text == "step 0 of 3"
        assert driver.find_element(By.ID, "caption").text == "step 0 of 3: seed ∂f/∂f = 1"
        assert grad_of(driver, "f") == "1" and grad_of(driver, "x") == "pending"
        assert driver.find_element(By.ID, "prev").get_property("disabled") is True
        driver.find_element(By.ID, "next").click()
        assert counter.text == "step 1 of 3"
        assert "f sends its gradient to a, b" in driver.find_element(By.ID, "caption").text
        assert "active" in element(driver, "f").get_attribute("class")
        driver.find_element(By.ID, "next").click()
        # Step 2 runs b: x has received b's 9 but still waits for a's two 12s; a's 4 arrived.
        assert counter.text == "step 2 of 3" and grad_of(driver, "x") == "(9) + …"
        assert grad_of(driver, "a") == "4" and "active" in element(driver, "b").get_attribute("class")
        assert "pending" in element(driver, "x").get_attribute("class")
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        assert counter.text == "step 3 of 3"
        assert grad_of(driver, "x") == "(9) + (12) + (12) = 33"
        assert driver.find_element(By.ID, "next").get_property("disabled") is True
        assert driver.execute_script(PLACES) == places  # laid out once: nothing moved
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        assert counter.text == "step 2 of 3"
        driver.find_element(By.ID, "first").click()
        assert counter.text == "step 0 of 3"
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.END)
        assert counter.text == "step 3 of 3"
        driver.find_element(By.ID, "mode-explore").click()  # back: the whole pass, no highlight
        assert not driver.find_elements(By.CSS_SELECTOR, ".element.active, .element.pending")
        assert driver.execute_script(
            "return performance.getEntriesByType('resource').length") == 0  # nothing fetched
        assert console_errors(driver) == []
    finally:
        driver.quit()


PLACES = ("return Array.from(document.querySelectorAll('#graph .element'))"
          ".map(g => g.dataset.id + ' ' + g.getAttribute('transform'))")


def element(driver, node_id: str):
    return driver.find_element("css selector", f'#graph .element[data-id="{node_id}"]')


def grad_of(driver, node_id: str) -> str:
    """The text of a node's gradient row as drawn now."""
    return element(driver, node_id).find_element("css selector", "text.r.grad").text
