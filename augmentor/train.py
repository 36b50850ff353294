"""``python -m augmentor.train RECIPE --data ... --out ...``: ``augment train`` as a module torchrun can start.

    torchrun --standalone --nproc-per-node 4 -m augmentor.train frid-adar-liver --data train.h5 --out runs/liver

Same options, checks and one-line errors as ``augment train`` (it is that command); under torchrun every
process runs it as one rank of a data-parallel run (:mod:`augmentor.training.distributed`).
"""

from __future__ import annotations

import sys


def main(arguments: list[str] | None = None) -> None:
    from cli import app  # the installed command: one parser for both ways in

    app(["train", *(sys.argv[1:] if arguments is None else arguments)], prog_name="python -m augmentor.train")


if __name__ == "__main__":
    main()
