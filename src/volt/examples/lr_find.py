"""The learning-rate finder on the digits example, drawn to a PNG (the README's picture is made this way):

    python -m volt.examples.lr_find lr_find.png        # needs matplotlib: pip install "volt[plot]"

It runs `Tuner(trainer).lr_find` on `DigitsClassifier` and `DigitsDataModule` (volt/examples/digits.py), saves the
loss-against-rate curve with the suggestion marked, and prints the suggestion. Nothing else is written.
"""
import argparse
import os
from typing import Optional

import torch

from volt.examples.digits import DigitsClassifier, DigitsDataModule


def find_learning_rate(path: str = "lr_find.png", seed: int = 0) -> Optional[float]:
    """Run the finder from 1e-5 to 1 (100 steps, the default), save its picture to `path`; returns the suggestion."""
    from volt import Trainer, seed_everything
    from volt.tuner import Tuner

    seed_everything(seed, verbose=False)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    finder = Tuner(trainer).lr_find(DigitsClassifier(), datamodule=DigitsDataModule(), min_lr=1e-5, max_lr=1.0)
    finder.plot(suggest=True).savefig(path, dpi=110)
    return finder.suggestion()


def main(args=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m volt.examples.lr_find",
                                     description="Draw the learning-rate finder's curve for the digits example.")
    parser.add_argument("path", nargs="?", default="lr_find.png", help="where to save the PNG (default: lr_find.png)")
    path = parser.parse_args(args).path
    if "OMP_NUM_THREADS" not in os.environ:  # as `volt fit`: one thread runs this tiny model fastest
        torch.set_num_threads(1)
    suggestion = find_learning_rate(path)
    print(f"Learning-rate finder picture: {path}")
    print(f"Suggested learning rate: {suggestion:.2e} (the example trains with 3e-3)")


if __name__ == "__main__":
    main()
