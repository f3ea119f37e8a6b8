"""Dead activations, however they are called: `nn.ReLU` modules and `F.relu`, `torch.relu`,
`x.relu()` (in place or not), and the GELU family (GELU, SiLU, Mish) as modules or functions.

While the watched model's forward runs, a torch-call recorder (backtrace.torchcalls) sees every
activation call; module hooks keep the path of the running module. Each call site adds, on the
device, how many of its outputs are dead: exactly zero for ReLU (its gradient is exactly zero
there), below a cutoff for the smooth ones (where their gradient is under 1e-3). The counts are
read with the step's one transfer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..torchcalls import Call, TorchCalls

DERIVATIVE = 1e-3  # below this local derivative a unit passes (almost) no gradient back
# Below these inputs |f'(x)| < 1e-3 (found numerically in float64; tests/test_activations checks)
CUTOFFS = {"gelu": -3.82, "silu": -9.0, "mish": -9.0}

_FUNCTIONS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", torch.Tensor.relu: "relu", torch.relu_: "relu",
    torch.Tensor.relu_: "relu", F.relu_: "relu", F.relu6: "relu",
    F.gelu: "gelu", F.silu: "silu", F.mish: "mish",
}
_MODULES = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.GELU, torch.nn.SiLU, torch.nn.Mish)


@dataclass(frozen=True, slots=True)
class Site:
    """Where an activation runs: its op, the module running it, and whether it is the forward of
    an activation module (`nn.ReLU`) or a function called inside another module's forward."""

    op: str  # relu, gelu, silu, mish
    module: str  # the module's path ("" at the top)
    kind: str  # the module's type
    functional: bool

    @property
    def cutoff(self) -> float | None:
        """The input below which the activation is dead (None: ReLU, dead at exactly zero out)."""
        return CUTOFFS.get(self.op)


class Activations:
    """Counts dead outputs per activation call site while the model's forward runs."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.sites: dict[str, Site] = {}  # site name -> what it is
        self.dead: dict[str, tuple[torch.Tensor, int]] = {}  # this step: site -> (dead, total)
        self._names = {id(m): path for path, m in model.named_modules()}
        self._stack: list[tuple[torch.nn.Module, str, dict[str, int]]] = []
        self._calls = TorchCalls(self._on_call, functions=False)
        self._depth = 0
        self._handles: list[Any] = []

    def attach(self) -> None:
        """Hook every module (the running path) and the root (the recorder, while forward runs).
        A torch.compile'd model is left alone: its forward is not ours to enter."""
        if hasattr(self.model, "_orig_mod"):
            return
        for m in self.model.modules():
            self._handles.append(m.register_forward_pre_hook(self._enter))
            self._handles.append(m.register_forward_hook(self._leave, always_call=True))

    def detach(self) -> None:
        """Remove every hook; a forward in progress (there should be none) stops being watched."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._depth:
            self._depth = 0
            self._calls.__exit__(None, None, None)
        self._stack.clear()

    remove = detach  # a hook handle like the others of a Watch

    def take(self) -> dict[str, tuple[torch.Tensor, int]]:
        """This step's dead counts per site (device tensors), and start counting the next step."""
        dead, self.dead = self.dead, {}
        return dead

    def _enter(self, module: torch.nn.Module, args: Any) -> None:
        if torch.compiler.is_compiling():  # a compiled submodule: nothing to trace into its graph
            return
        self._stack.append((module, self._names.get(id(module), type(module).__name__), {}))
        if module is self.model:
            self._depth += 1
            if self._depth == 1:
                self._calls.__enter__()

    def _leave(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if torch.compiler.is_compiling():
            return
        if self._stack and self._stack[-1][0] is module:
            self._stack.pop()
        if module is self.model and self._depth:
            self._depth -= 1
            if self._depth == 0:
                self._calls.__exit__(None, None, None)

    def _on_call(self, call: Call) -> None:
        if torch.compiler.is_compiling():  # dynamo traces this mode inside compiled code
            return
        op = _FUNCTIONS.get(call.func) if not call.inside else None
        if op is None or not self._stack or not torch.is_grad_enabled():
            return
        module, path, seen = self._stack[-1]
        if not module.training:
            return
        name = self._site(module, path, seen, op)
        with torch.no_grad():
            x = call.out if op == "relu" else call.args[0] if call.args else None
            if not isinstance(x, torch.Tensor) or x.numel() == 0:
                return
            cutoff = CUTOFFS.get(op)
            dead = (x.numel() - torch.count_nonzero(x)) if cutoff is None \
                else torch.count_nonzero(x.detach() <= cutoff)
            before = self.dead.get(name)
            self.dead[name] = (dead, x.numel()) if before is None else \
                (before[0] + dead, before[1] + x.numel())

    def _site(self, module: torch.nn.Module, path: str, seen: dict[str, int], op: str) -> str:
        """The site's name: an activation module's path, or `path:op` (then `path:op#2`, ...
        for further calls of the same op in one forward of that module)."""
        own = isinstance(module, _MODULES) and not seen
        seen[op] = seen.get(op, 0) + 1
        if own:
            name = path
        else:
            name = f"{path}:{op}" if path else op
            if seen[op] > 1:
                name += f"#{seen[op]}"
        if name not in self.sites:
            self.sites[name] = Site(op, path, type(module).__name__, not own)
        return name
