"""The tracer and `watch` under torch.distributed: two ranks on gloo bound to 127.0.0.1, a free port
each run, every run bounded by a timeout. tests/dist_worker.py runs the DDP and FSDP2 scenarios
in one spawn of two processes; `backtrace train` and `backtrace trace` run under torchrun."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from backtrace import Trace

HERE = Path(__file__).parent
TIMEOUT = 150  # seconds for one two-process run, start-up included, on a loaded machine

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXAMPLE = HERE.parent / "examples" / "ddp_train.py"  # the README's distributed example


ENV = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo",
       "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}


def start(name: str, cmd: list[str], cwd: Path) -> subprocess.Popen:
    """Start cmd in its own process group (so a timeout can kill all of it), its output to files
    (several run at once: pipes could fill up)."""
    out, err = (open(cwd / f"{name}.{k}", "w") for k in ("out", "err"))
    with out, err:
        return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=out, stderr=err, text=True,
                                start_new_session=True)


def finish(p: subprocess.Popen, name: str, cwd: Path,
           deadline: float) -> subprocess.CompletedProcess:
    """Wait for p until the deadline; past it the whole process group is killed."""
    try:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    out, err = ((cwd / f"{name}.{k}").read_text() for k in ("out", "err"))
    if p.returncode == -signal.SIGKILL:
        pytest.fail(f"{name} timed out after {TIMEOUT} s\n{out}\n{err}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "backtrace",
            *args, str(EXAMPLE), "--steps", "3"]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict:
    """Every two-process run of this file, started at once (they wait on start-up, mostly)."""
    root = tmp_path_factory.mktemp("dist")
    deadline = time.monotonic() + TIMEOUT
    commands = {"worker": [sys.executable, str(HERE / "dist_worker.py"), str(root),
                           str(free_port())],
                "train": torchrun("train"), "trace": torchrun("trace", "-o", "t.json")}
    running = {name: start(name, cmd, root) for name, cmd in commands.items()}
    done = {name: finish(p, name, root, deadline) for name, p in running.items()}
    done["root"] = root
    return done


@pytest.fixture(scope="module")
def ranks(jobs) -> list[dict]:
    done = jobs["worker"]
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((jobs["root"] / f"rank{r}.json").read_text()) for r in (0, 1)]


# ---------------------------------------------------------------- DDP

def test_ddp_traced_runs_are_bit_identical_to_untraced(ranks):
    for mine in ranks:
        digests = {k: mine[k]["digest"] for k in ("untraced", "stats", "full")}
        assert len(set(digests.values())) == 1, digests  # parameters, gradients, every step
        assert mine["other_lr"]["digest"] != digests["untraced"]  # the digest sees a change
        assert mine["stats"]["losses"] == mine["full"]["losses"] == mine["untraced"]["losses"]
    assert ranks[0]["untraced"]["losses"] != ranks[1]["untraced"]["losses"]  # own batches


def test_ddp_level_full_gradients_are_the_reduced_ones_and_the_local_ones_beside(ranks):
    for r, mine in enumerate(ranks):
        full = mine["full"]
        assert full["grads_equal"] == [True] * 3  # torch.equal(trace.grads[n], p.grad)
        assert full["local_grads"] == [True] * 3  # = a plain copy's gradient on this rank's batch
        assert full["meta"] == {"rank": r, "world_size": 2} and full["errors"] == []
        assert mine["stats"]["errors"] == []


def test_seeded_divergence_is_flagged_ranks_differ_naming_parameter_and_ranks(ranks):
    findings = ranks[0]["diverge"]["findings"]
    assert [(k, layer, step) for k, layer, step, _ in findings] == [("ranks-differ", "module.0", 3)]
    message = findings[0][3]
    assert "parameter module.0.weight differs across ranks" in message
    assert "rank 1 holds other values than rank 0" in message
    assert "changed outside the synchronised update" in message
    assert ranks[0]["healthy"]["findings"] == [] == ranks[1]["healthy"]["findings"]


def test_parameter_outside_the_ddp_wrapper_is_flagged_not_synchronised(ranks):
    found = {(k, layer, step): m for k, layer, step, m in ranks[0]["outside"]["findings"]}
    message = found[("not-synchronised", "group0.param4", 1)]
    assert "the gradient of group0.param4 differs across ranks" in message
    assert "was not synchronised" in message
    assert ("ranks-differ", "group0.param4", 1) in found  # and so its values drift apart
    assert not [key for key in found if key[1].startswith("module")]  # DDP's own are in sync


def test_each_ranks_loss_and_gradient_norm_side_by_side(ranks):
    side = ranks[0]["healthy"]["ranks"]  # per step, per rank: (loss, local gradient norm)
    for r in (0, 1):
        assert [step[r][0] for step in side] == ranks[r]["healthy"]["losses"]
    assert all(step[0][1] != step[1][1] for step in side)  # each rank's own gradient norm
    assert ranks[1]["healthy"]["ranks"] == side  # every rank got everyone's


def test_ranks_every_n_steps(ranks):
    every2 = ranks[0]["every2"]
    assert [bool(step) for step in every2["ranks"]] == [True, True, False, True]  # 1st, then 2k
    assert [(k, step) for k, _, step, _ in every2["findings"]] == [("ranks-differ", 4)]


# ---------------------------------------------------------------- FSDP2

def reference() -> torch.nn.Module:
    """The same model and data in one process: both ranks' batches together (equal sizes, so the
    mean over all of them is the average of the ranks' means, which is what FSDP reduces)."""
    sys.path.insert(0, str(HERE))
    try:
        import dist_worker as w
    finally:
        sys.path.remove(str(HERE))
    net = w.model()
    w.loss_of(net, torch.cat([w.batch(0, 0), w.batch(1, 0)])).backward()
    return net


def test_fsdp2_names_and_global_figures_equal_a_single_process_run(ranks):
    ref = reference()
    expected = dict(ref.named_parameters())
    for r, mine in enumerate(ranks):
        got = mine["fsdp"]
        for level in ("stats", "full"):
            assert got[level]["errors"] == [] and got[level]["meta"] == {"rank": r,
                                                                         "world_size": 2}
            assert set(got[level]["grads"]) == set(expected)  # the model's names, no %k
        for name, p in expected.items():
            norm, mean, absmax, nonfinite = got["stats"]["grads"][name]  # global, not the shard's
            assert nonfinite == 0
            assert norm == pytest.approx(p.grad.norm().item(), rel=1e-12)
            assert mean == pytest.approx(p.grad.mean().item(), rel=1e-9, abs=1e-15)
            assert absmax == pytest.approx(p.grad.abs().max().item(), rel=1e-12)
            assert got["full"]["grads"][name] == pytest.approx(p.grad.flatten().tolist(),
                                                               rel=1e-12, abs=1e-15)
            assert got["stats"]["values"][name] == pytest.approx(p.norm().item(), rel=1e-12)
            assert got["full"]["values"][name] == pytest.approx(p.norm().item(), rel=1e-12)
            stepped, backward, weight, update = got["watch"][name]
            assert stepped == backward == pytest.approx(p.grad.norm().item(), rel=1e-12)
            assert weight == pytest.approx(p.norm().item(), rel=1e-12)
            assert update == pytest.approx(0.1 * p.grad.norm().item(), rel=1e-9)
        assert got["watch_findings"] == []




def test_backtrace_train_under_torchrun_rank_0_reports_every_rank(jobs):
    done = jobs["train"]
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("optimizer 1: SGD on Sequential, 3 steps, rank 0 of 2") == 1
    losses = {}
    for line in out.splitlines():
        if line.startswith("rank "):
            _, r, _, k, _, value = line.split()
            losses[(int(r), int(k))] = float(value)
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["3"]]
    side = next(row for row in rows if len(row) == 5)  # step, loss r0, loss r1, ‖g‖ r0, ‖g‖ r1
    assert float(side[1]) == pytest.approx(losses[(0, 3)], rel=1e-3)
    assert float(side[2]) == pytest.approx(losses[(1, 3)], rel=1e-3)
    assert "no warnings" in out


def test_backtrace_trace_under_torchrun_each_rank_records_rank_0_prints(jobs):
    done = jobs["trace"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Backward call 1 (backward, level stats)") == 1
    assert "rank 0 of 2: each parameter's gradient is the one the optimizer steps with" \
        in done.stdout
    t0, t1 = (Trace.from_json((jobs["root"] / name).read_text()) for name in ("t.json",
                                                                              "t.rank1.json"))
    assert (t0.meta["rank"], t1.meta["rank"], t0.meta["world_size"]) == (0, 1, 2)
    for name in ("module.0.weight", "module.2.bias"):
        assert t0.grads[name] == t1.grads[name]  # all-reduced: the same on both ranks
        local0, local1 = (t.node(name).meta["local_grad"] for t in (t0, t1))
        assert local0 != local1  # each rank's own batch
        assert t0.grads[name].norm <= max(local0.norm, local1.norm) * (1 + 1e-9)
        assert math.isfinite(t0.grads[name].norm)
