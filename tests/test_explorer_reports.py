"""The debugging reports in the HTML explorer: a NaN tab on the page of a trace that holds an inf
or NaN (Trace.nonfinite), a Diff tab on the page `backtrace diff A B -o page.html` writes; each
links to the nodes it names, and a clean trace's page has neither."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import backtrace
from backtrace.cli import cli
from backtrace.nonfinite import lines

from .pages import browser, console_errors, open_page, page_data
from .test_diff import net, run


class Masked(nn.Module):
    """sqrt where the input is positive, 0 elsewhere: NaN gradients through torch.where."""

    def forward(self, h):
        return torch.where(h > 0, torch.sqrt(h), torch.zeros_like(h))


def nan_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), Masked())
    with backtrace.trace(model=model) as t:
        model(torch.randn(8, 3)).sum().backward()
    assert torch.isnan(model[0].weight.grad).any()  # PyTorch's own gradient is NaN
    return t.trace


def test_a_trace_with_a_nan_gets_a_nan_tab_that_goes_to_the_culprit(tmp_path):
    trace = nan_trace()
    report = trace.nonfinite()
    page = backtrace.export(trace, tmp_path / "nan.html")
    shipped = page_data(page.read_text(encoding="utf-8"))["panels"]
    assert shipped["nan"]["culprit"] == report.culprit.node
    assert trace.node(report.culprit.node).op == "sqrt"
    assert shipped["nan"]["lines"] == lines(report, width=40) and shipped["nan"]["cause"] == "0 × NaN"
    assert "diff" not in shipped or shipped["diff"] is None
    driver = browser(tmp_path / "profile", 1400, 900)
    try:
        open_page(driver, page)
        assert driver.find_elements("id", "tab-diff") == []
        driver.find_element("id", "tab-nan").click()
        text = driver.find_element("css selector", "pre.report").text
        assert text.splitlines()[0] == report_line(report)
        driver.find_element("css selector", "button.link[title='show %s']"
                            % report.culprit.node).click()
        assert driver.execute_script("return backtrace.selection") == {
            "type": "node", "id": report.culprit.node}
        assert console_errors(driver) == []
    finally:
        driver.quit()


def report_line(report) -> str:
    return lines(report, width=40)[0]


def paragraph(text: str) -> str:
    """The first paragraph of a text, its lines joined."""
    return " ".join(text.strip().split("\n\n")[0].split())


def test_a_clean_trace_has_no_report_tabs(tmp_path):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        (x.exp() * 3).sum().backward()
    page = backtrace.export(t.trace, tmp_path / "ok.html")
    shipped = page_data(page.read_text(encoding="utf-8"))["panels"]
    assert shipped.get("nan") is None and shipped.get("diff") is None
    driver = browser(tmp_path / "profile", 1400, 900)
    try:
        open_page(driver, page)
        assert driver.find_elements("id", "tab-nan") == driver.find_elements("id", "tab-diff") == []
        assert console_errors(driver) == []
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Trace files of a model and of the same model with block 1's backward off by 1%."""
    folder = tmp_path_factory.mktemp("runs")
    a, b = folder / "a.json", folder / "b.json"
    a.write_text(run(net()).to_json())
    b.write_text(run(net(1.01)).to_json())
    return a, b


def test_diff_writes_bs_page_with_the_report_in_a_diff_tab(two_runs, tmp_path):
    a, b = two_runs
    page = tmp_path / "diff.html"
    out = CliRunner().invoke(cli, ["diff", str(a), str(b), "--format", "json", "-o", str(page)])
    assert out.exit_code == 1, out.output  # they differ
    printed = json.loads(out.stdout)
    shipped = page_data(page.read_text(encoding="utf-8"))
    report = shipped["panels"]["diff"]
    assert {k: v for k, v in report.items() if k != "text"} == printed  # the same report
    first = printed["first"]
    trace_b = backtrace.Trace.from_json(b.read_text())
    assert trace_b.node(first["node_b"]).module == "blocks.1" == first["module"]
    assert paragraph(report["text"]) == printed["line"]  # the verdict, wrapped to 80 columns
    assert shipped["title"] and shipped.get("panels", {}).get("nan") is None
    driver = browser(tmp_path / "profile", 1400, 900)
    try:
        open_page(driver, page)
        driver.find_element("id", "tab-diff").click()
        assert paragraph(driver.find_element("css selector", "pre.report").text) == printed["line"]
        driver.find_element("css selector", "button.link[title='show %s']"
                            % first["node_b"]).click()
        assert driver.execute_script("return backtrace.selection") == {
            "type": "node", "id": first["node_b"]}
        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_diff_output_must_be_a_page_and_nothing_is_written_otherwise(two_runs, tmp_path):
    a, b = two_runs
    out = CliRunner().invoke(cli, ["diff", str(a), str(b), "-o", str(tmp_path / "d.svg")])
    assert out.exit_code == 2 and "give a path ending in .html" in out.output
    assert list(tmp_path.iterdir()) == []
