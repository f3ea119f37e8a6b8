"""SGD vs Adam: on a long narrow valley (a formula, with the path of each), then on the spiral MLP.

Run:  python examples/sgd_vs_adam.py [--plot paths.svg]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from backtrace.training import descend

VALLEY = "L = (x - 1)**2 + 10*(y + x)**2"  # minimum at x = 1, y = -1; steep across, flat along


def on_a_valley(steps: int = 100, lr: float = 0.04):
    """SGD, momentum and Adam from the same start with the same learning rate."""
    return [descend(VALLEY, {"x": -2.0, "y": 2.0}, lr=lr, steps=steps, optimizer=name, label=name)
            for name in ("sgd", "momentum", "adam")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write the paths over the loss contours here (.svg/.png)")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    print(f"{VALLEY}, start (-2, 2), lr 0.04, 100 steps:")
    runs = on_a_valley()
    for r in runs:
        x, y = r.final["x"], r.final["y"]
        print(f"  {r.label:>8}: ends at ({x:.4f}, {y:.4f}), loss {r.final_loss:.3g}, {r.verdict}")
    if args.plot:
        from backtrace.training.plots import descent_figure, save

        save(descent_figure(runs), args.plot)
        print(f"chart written to {args.plot}")

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from train_mlp import train

    print(f"\nThe spiral MLP, {args.epochs} epochs of 9 steps:")
    for name, lr in (("sgd", 0.5), ("adam", 0.05)):
        w, accuracy = train(epochs=args.epochs, lr=lr, optimizer=name, log=lambda s: None)
        losses = [v for v in w.losses if v is not None]
        print(f"  {name:>4} lr {lr:<5g} loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"accuracy {accuracy:.1%}")


if __name__ == "__main__":
    main()
