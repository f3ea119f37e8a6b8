"""The autograd nodes the tracer looks at, held so that freeing a deep graph can never crash.

Since torch 2.13 a node that ever had a Python object (``t.grad_fn``, ``node.next_functions``,
``Node.metadata``, ``Node.register_hook`` all make one) is freed through that object, recursively:
a graph whose nodes all have one, freed at once, recurses once per node and overflows the C stack
past a few ten thousand nodes (a 40,000-step ``nn.RNNCell`` loop ends in SIGSEGV). So every node
object the tracer makes is held here, and a node is let go only when nothing else refers to it:
its inputs are then still held, so releasing it frees nothing recursively. Released newest first
(by creation number), a dropped graph goes in one pass.

Sweeps run when the held set has doubled since the last one (in a training loop: once a step,
freeing the step before), when a tracer exits, and after full garbage collections (``gc.collect()``,
also once no tracer is on; at most 5% of the time goes to these). A dropped graph is therefore
freed a little later than untraced, like a reference cycle, and never kept.
"""
from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import compat

_MIN_SWEEP = 512  # below this many held nodes a sweep is not worth it (unless asked for)
_MAX_PASSES = 3  # nodes made out of creation order (other threads) may need a second pass

_held: dict[int, Any] = {}  # id -> node object; holding it keeps its id unique
_state = {"next": _MIN_SWEEP, "sweeping": False, "installed": False, "at": 0.0, "cost": 0.0}
_lock = threading.Lock()


def hold(node: Any) -> Any:
    """Keep `node` (a torch autograd node object, or None) until only we refer to it; returns it."""
    if node is not None and id(node) not in _held:
        _held[id(node)] = node
        if len(_held) >= _state["next"]:
            sweep()
        if not _state["installed"]:
            _install()
    return node


def grad_fn(t: Any) -> Any:
    """``t.grad_fn``, held."""
    return hold(t.grad_fn)


def children(node: Any) -> Iterator[tuple[Any, int]]:
    """``node.next_functions`` (input node or None, output number), each node held."""
    for child, nr in node.next_functions:
        yield hold(child), nr


def held() -> int:
    """How many node objects are held now."""
    return len(_held)


def _refs(table: dict, key: int) -> int:
    return sys.getrefcount(table.get(key))


def _order(node: Any) -> int:
    seq = compat.sequence_nr(node)
    return -1 if seq >= 1 << 63 else seq  # AccumulateGrad (the largest number) has no inputs: last


def _newest_first(snapshot: dict[int, Any]) -> list[int]:
    """The keys, consumers before their inputs (the snapshot's references end with this call)."""
    return sorted(snapshot, key=lambda k: _order(snapshot[k]), reverse=True)


def sweep() -> int:
    """Let go of every held node nothing else refers to, consumers before their inputs; returns
    how many went."""
    if _state["sweeping"] or not _lock.acquire(blocking=False):
        return 0  # a sweep is running (a collection inside one, or another thread)
    _state["sweeping"] = True
    freed, start = 0, time.perf_counter()
    try:
        base = _refs({0: object()}, 0)  # the count of an object referred to by our table alone
        for _ in range(_MAX_PASSES):
            keys = _newest_first(_held.copy())  # one C call: nothing changes the table meanwhile
            went = 0
            for k in keys:
                if _refs(_held, k) <= base:
                    _held.pop(k, None)  # frees the node; its inputs are held: nothing recursive
                    went += 1
            freed += went
            if not went:
                break
    finally:
        _state["next"] = max(_MIN_SWEEP, 2 * len(_held))
        _state["at"] = time.perf_counter()
        _state["cost"] = _state["at"] - start
        _state["sweeping"] = False
        _lock.release()
    return freed


def _after_collection(phase: str, info: dict) -> None:
    """gc callback: after a full collection, let go of what the collection made unreferenced."""
    if phase == "stop" and info.get("generation") == 2 and _held \
            and time.perf_counter() - _state["at"] > 20 * _state["cost"]:
        sweep()


def _install() -> None:
    """Register the gc callback once per process (it costs nothing while nothing is held)."""
    with _lock:
        if not _state["installed"]:
            gc.callbacks.append(_after_collection)
            _state["installed"] = True
