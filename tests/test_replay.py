"""Backward replay: one SVG per step, and the self-contained HTML page driven in headless Chromium."""
from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from backtrace import explain
from backtrace.cli import cli
from backtrace.errors import LimitError
from backtrace.render import replay
from backtrace.render.dot import ACTIVE_FILL
from backtrace.render.replay import frames, replay_html, write_steps

from .conftest import TEXTBOOK

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


def test_html_icons_need_no_font_and_the_caption_shows_once():
    page = replay_html(explain(FANOUT[0], **FANOUT[1]))
    assert not re.search("[⏮⏭◀▶]", page)  # drawn as SVG paths instead
    header = page.split("<main>")[0]
    assert header.count("<svg") == 4
    caption = "f sends its gradient to a, b"
    frames_html = page.split("<main>")[1]
    # Once per frame, in the page's caption attribute; not again inside the picture.
    assert frames_html.count(caption) == 1 and f'data-caption="step 1 of 3: {caption}"' in page
    assert 'style="min-width:' in page  # a wide graph scrolls instead of shrinking past reading


def test_steps_through_the_cli(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "step-007.svg").write_text("from an older, longer replay")
    (tmp_path / "s" / "notes.txt").write_text("kept")
    result = CliRunner().invoke(cli, ["explain", "f=(x+y)*z", "--x", "-2", "--y", "5", "--z", "-4",
                                      "--steps", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == \
        ["notes.txt", "step-000.svg", "step-001.svg", "step-002.svg"]


def test_html_is_self_contained():
    page = replay_html(explain(TEXTBOOK[0], **TEXTBOOK[1]))
    assert page.count('class="frame"') == 3 and "<?xml" not in page
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)\s*=", page, re.I)
    assert not re.search(r"""(url\(|@import|fetch\(|XMLHttpRequest)""", page)
    # The only http strings are XML namespace names, which browsers never fetch.
    assert set(re.findall(r"https?://[^\s\"']+", page)) <= {"http://www.w3.org/2000/svg",
                                                          "http://www.w3.org/1999/xlink"}


def test_replay_refuses_a_pass_too_long_to_step_through(monkeypatch):
    monkeypatch.setattr(replay, "MAX_STEPS", 1)
    with pytest.raises(LimitError, match="more than a replay shows"):
        frames(explain(TEXTBOOK[0], **TEXTBOOK[1]))


# ---------------------------------------------------------------- a real browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def browser(profile: Path):
    """Headless Debian Chromium through selenium; skipped locally without it, fails in CI."""
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium and chromium-driver for the replay test "
                        "(.ci/run installs them as root)")
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_html_replay_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page = tmp_path / "replay.html"
    result = CliRunner().invoke(cli, ["explain", FANOUT[0], "x=3", "-o", str(page)])
    assert result.exit_code == 0, result.output
    driver = browser(tmp_path / "chrome-profile")
    try:
        driver.get(page.as_uri())
        counter = driver.find_element(By.ID, "counter")
        assert counter.text == "step 0 of 3"

        def visible_frame():
            shown = [f for f in driver.find_elements(By.CSS_SELECTOR, ".frame") if f.is_displayed()]
            assert len(shown) == 1
            return shown[0]

        assert visible_frame().get_attribute("data-step") == "0"
        assert driver.find_element(By.ID, "prev").get_property("disabled") is True
        driver.find_element(By.ID, "next").click()
        assert counter.text == "step 1 of 3"
        assert "f sends its gradient to a, b" in driver.find_element(By.ID, "caption").text
        driver.find_element(By.ID, "next").click()
        frame_text = visible_frame().text
        assert counter.text == "step 2 of 3" and "(9) + …" in frame_text  # x half-filled
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        assert counter.text == "step 3 of 3"
        assert "(9) + (12) + (12) = 33" in visible_frame().text
        assert driver.find_element(By.ID, "next").get_property("disabled") is True
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        assert counter.text == "step 2 of 3"
        driver.find_element(By.ID, "first").click()
        assert counter.text == "step 0 of 3" and visible_frame().get_attribute("data-step") == "0"
        assert driver.execute_script(
            "return performance.getEntriesByType('resource').length") == 0  # nothing fetched
    finally:
        driver.quit()
