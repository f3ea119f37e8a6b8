"""A problem of the pytest plugin is reported on the test that met it, never as an INTERNALERROR
that ends the session: the other tests still run (pytester runs real inner sessions)."""
from __future__ import annotations

import torch  # noqa: F401 - loaded once here: pytester's in-process runs must not re-import it

pytest_plugins = ["pytester"]

TESTS = '''
import torch

def test_sparse_embedding_fails(backtrace):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    with backtrace.trace(model=emb, level="full") as t:
        emb(torch.tensor([1, 2, 1])).sum().backward()
    assert t.trace.grads["weight"].is_sparse
    assert False, "deliberately failing"

def test_passes():
    assert True

def test_dense_fails(backtrace):
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with backtrace.trace(names={"w": w}):
        (w * 3).sum().backward()
    assert False, "also failing"
'''


def run(pytester, *args):
    pytester.makepyfile(test_inner=TESTS)
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def sections(out: str) -> dict[str, str]:
    """Each failing test's backtrace section, by test name."""
    found = {}
    for name in ("test_sparse_embedding_fails", "test_dense_fails"):
        part = out.split(f"_ {name} _")[1]
        found[name] = part.split("backtrace: backward pass of the last trace")[1].split(
            "\n_____")[0].split("short test summary")[0]
    return found


def test_a_sparse_gradient_at_level_full_is_shown_and_the_session_goes_on(pytester, tmp_path):
    result = run(pytester, f"--backtrace-dir={tmp_path / 'traces'}")
    out = result.stdout.str()
    assert "INTERNALERROR" not in out + result.stderr.str()
    result.assert_outcomes(failed=2, passed=1)
    assert result.ret == 1  # tests failed; not 3 (internal error)
    parts = sections(out)
    sparse = parts["test_sparse_embedding_fails"]
    # The table is there: the embedding's step with its sparse gradient (rows 1, 2, 1 of a
    # 10×3 table: ‖·‖ = sqrt(4·3 + 1·3)), and both files.
    assert "EmbeddingBackward0" in sparse and "[10×3] ‖·‖=3.87298" in sparse
    assert sparse.count("saved ") == 2 and "test_sparse_embedding_fails.json" in sparse
    # The dense test after it got its full report and both files.
    dense = parts["test_dense_fails"]
    assert "MulBackward0" in dense and dense.count("saved ") == 2
    assert {p.suffix for p in (tmp_path / "traces").glob("*dense_fails*")} == {".json", ".svg"}
    for line in sparse.splitlines():  # a failed save is one short line, not torch's 100
        assert len(line) < 400


def test_backtrace_dir_that_is_a_file_is_reported_on_each_failing_test(pytester):
    blocker = pytester.path / "afile"
    blocker.write_text("not a folder")
    result = run(pytester, f"--backtrace-dir={blocker}")
    out = result.stdout.str()
    assert "INTERNALERROR" not in out + result.stderr.str()
    result.assert_outcomes(failed=2, passed=1)
    for part in sections(out).values():
        assert f"could not save the trace in --backtrace-dir {blocker}: it is a file, not a " \
               "folder" in part
    assert blocker.read_text() == "not a folder"
    # The table itself is still shown.
    assert "MulBackward0" in sections(out)["test_dense_fails"]


def test_a_broken_formatter_is_reported_on_the_test(pytester, monkeypatch):
    import backtrace.pytest_plugin as plugin

    def broken(trace, width=120):
        raise RuntimeError("formatter broke\nsecond line")

    monkeypatch.setattr(plugin, "backward_text", broken)
    result = run(pytester)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out
    result.assert_outcomes(failed=2, passed=1)
    assert out.count("backtrace could not show the last trace: RuntimeError: formatter broke\n") == 2
    assert "second line" not in out


def test_a_failing_trace_lookup_is_reported_on_the_test(pytester, monkeypatch):
    import backtrace.pytest_plugin as plugin

    monkeypatch.setattr(plugin.BacktraceFixture, "last",
                        property(lambda self: (_ for _ in ()).throw(ValueError("no last"))))
    result = run(pytester)
    assert "INTERNALERROR" not in result.stdout.str()
    result.assert_outcomes(failed=2, passed=1)
    assert "backtrace could not show the last trace: ValueError: no last" in result.stdout.str()
