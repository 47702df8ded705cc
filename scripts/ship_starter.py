"""Turn a trained checkpoint into the shipped human-pose starter: ``models/lsp14-starter/`` (fp16 weights).

Usage: ``.venv/bin/python scripts/ship_starter.py --checkpoint runs/final-v2 --card models/MODEL_CARD.md``

The folder is an ordinary checkpoint folder (``vl4pose.checkpoint.load_checkpoint`` reads it; fp16 tensors load
into the fp32 networks) plus ``MODEL_CARD.md``. ``start.sh`` publishes it as round 0 of ``lsp14`` projects on real
photographs through the model registry, like every other version.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vl4pose.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a `vl4pose train` run or checkpoint folder")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "lsp14-starter")
    parser.add_argument("--card", type=Path, required=True, help="the model card (Markdown) to put beside it")
    args = parser.parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.skeleton.name != "lsp14":
        print(f"the starter is the lsp14 model; {args.checkpoint} is {ckpt.skeleton.name}", file=sys.stderr)
        return 2
    save_checkpoint(args.out, ckpt)
    weights = torch.load(args.out / "weights.pt", map_location="cpu", weights_only=True)
    half = {part: ({k: v.half() if v.is_floating_point() else v for k, v in state.items()} if part == "pose" else
                   {name: {k: v.half() if v.is_floating_point() else v for k, v in head.items()}
                    for name, head in state.items()})
            for part, state in weights.items()}
    torch.save(half, args.out / "weights.pt")
    shutil.copyfile(args.card, args.out / "MODEL_CARD.md")
    load_checkpoint(args.out)  # it must load back
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"shipped {args.out} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
