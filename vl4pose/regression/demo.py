"""Demonstrations of the direct-regression variant: procedural ``hand21`` images and LSPET.

There is no hand data here, so :class:`SyntheticHands` draws hands procedurally: a palm polygon and five
finger chains (wrist root, four keypoints per finger, the ``hand21`` order) with natural joint angles,
random hand rotation, scale, mirroring, skin tone and background. ``ood=True`` draws anatomically
impossible hands instead: joints bent sideways by 50-110 degrees and stretched phalanges. The hand demo
trains on natural hands only and checks that impossible hands get a lower offset likelihood.

Run: ``python -m vl4pose.regression.demo hand --steps 400`` or
``python -m vl4pose.regression.demo lspet --data ../shared/data/lspet --steps 400`` (JSON on stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from vl4pose.checkpoint import load_checkpoint
from vl4pose.data import load_samples
from vl4pose.data.crops import CropCache
from vl4pose.metrics import auroc, correct_keypoints, pck, torso_size
from vl4pose.models import preset
from vl4pose.regression.model import (RegressionPoseModel, crop_batches, crop_units, fit_regression,
                                      offset_log_likelihood)
from vl4pose.skeletons import HAND21, LSP14

log = logging.getLogger(__name__)

# per finger (HAND21 order): direction from the wrist (degrees from the hand axis), distance of its first
# joint from the wrist, and the three following segment lengths (units of the hand length)
_FINGERS = ((-62.0, 0.16, (0.13, 0.11, 0.09)), (-20.0, 0.42, (0.20, 0.12, 0.09)), (-4.0, 0.44, (0.22, 0.14, 0.10)),
            (10.0, 0.42, (0.20, 0.13, 0.09)), (24.0, 0.38, (0.15, 0.10, 0.08)))


class SyntheticHands:
    """Procedural hand images with ``hand21`` keypoints.

    Args:
        size: image side S in pixels.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size

    def poses(self, n: int, rng: np.random.Generator, ood: bool = False) -> np.ndarray:
        """(n, 21, 2) keypoints in crop units (x right, y down)."""
        out = np.zeros((n, 21, 2))
        for i in range(n):
            length = rng.uniform(0.55, 0.7)
            angle = math.radians(rng.uniform(-30, 30))
            mirror = -1.0 if rng.random() < 0.5 else 1.0
            wrist = np.array([0.5 + rng.uniform(-0.06, 0.06), 0.86 + rng.uniform(-0.04, 0.02)])
            broken = rng.random(5) < 0.6 if ood else np.zeros(5, bool)
            if ood and not broken.any():
                broken[rng.integers(5)] = True
            points = [np.zeros(2)]
            for f, (direction, base, segments) in enumerate(_FINGERS):
                heading = math.radians(direction + rng.uniform(-5, 5))
                joint = base * np.array([math.sin(heading), -math.cos(heading)])
                points.append(joint)
                for seg in segments:
                    if broken[f]:
                        heading += math.radians(rng.choice([-1, 1]) * rng.uniform(50, 110))
                        seg *= rng.uniform(1.3, 1.8)
                    else:
                        heading += math.radians(rng.uniform(-12, 12))
                        seg *= rng.uniform(0.65, 1.0)  # flexion foreshortens the phalanx
                    joint = joint + seg * np.array([math.sin(heading), -math.cos(heading)])
                    points.append(joint)
            local = np.array(points) * np.array([mirror, 1.0]) * length
            rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            out[i] = wrist + local @ rotation.T
        return out

    def render(self, poses: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """(n, 3, S, S) images in [0, 1] of (n, 21, 2) poses (drawn at 2x and downsampled)."""
        scale = 2 * self.size
        images = []
        for pose in poses:
            background = rng.uniform(0, 255, 3)
            noise = rng.normal(0, 18, (scale, scale, 3))
            canvas = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(canvas)
            skin = tuple(int(c) for c in rng.uniform([150, 90, 60], [255, 210, 180]))
            edge = tuple(int(c * 0.7) for c in skin)
            p = pose * scale
            width = max(2, int(0.045 * scale))
            palm = [p[0] + (p[0] - p[17]) * 0.15, p[1], p[5], p[9], p[13], p[17]]
            draw.polygon([tuple(q) for q in palm], fill=skin)
            for finger in range(5):
                chain = [p[0]] + [p[1 + 4 * finger + j] for j in range(4)]
                start = 1 if finger else 0  # the thumb starts at the wrist, other fingers at the palm
                draw.line([tuple(q) for q in chain[start:]], fill=edge, width=width + 2, joint="curve")
                draw.line([tuple(q) for q in chain[start:]], fill=skin, width=width, joint="curve")
            small = np.asarray(canvas.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255.0
            images.append(torch.from_numpy(small).permute(2, 0, 1))
        return torch.stack(images)

    def batch(self, n: int, rng: np.random.Generator, ood: bool = False) -> dict[str, torch.Tensor]:
        """A training batch: ``image``, ``keypoints`` (n, 21, 2) crop units, ``labelled`` (n, 21)."""
        poses = self.poses(n, rng, ood)
        return {"image": self.render(poses, rng), "keypoints": torch.from_numpy(poses).float(),
                "labelled": torch.ones(n, 21)}


@torch.no_grad()
def _evaluate(model: RegressionPoseModel, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = model(batch["image"])
    gt = torch.nan_to_num(batch["keypoints"])
    return {"log_likelihood": out.log_likelihood.numpy(), "keypoints": out.keypoints.numpy(),
            "gt_log_likelihood": offset_log_likelihood(gt, out.offset, out.chol, model.skeleton).sum(dim=1).numpy()}


def hand_demo(steps: int = 400, batch_size: int = 16, preset_name: str = "tiny", test: int = 200, seed: int = 0,
              regressor: str = "integral", train_images: int = 0) -> dict:
    """Train on natural synthetic hands; compare the likelihood of natural and impossible test hands.

    ``train_images`` > 0 draws a fixed training set once (faster); 0 draws fresh hands every step.
    """
    torch.manual_seed(seed)
    config = preset(preset_name)
    hands = SyntheticHands(config.input_size)
    model = RegressionPoseModel(config, HAND21, regressor)
    if train_images:
        fixed = hands.batch(train_images, np.random.default_rng([seed, 10**6 + 2]))

        def batches(step: int) -> dict[str, torch.Tensor]:
            rows = torch.from_numpy(np.random.default_rng([seed, step]).choice(train_images, batch_size, replace=False))
            return {key: value[rows] for key, value in fixed.items()}
    else:
        def batches(step: int) -> dict[str, torch.Tensor]:
            return hands.batch(batch_size, np.random.default_rng([seed, step]))
    history = fit_regression(model, batches, steps)
    ind = hands.batch(test, np.random.default_rng([seed, 10**6]))
    ood = hands.batch(test, np.random.default_rng([seed, 10**6 + 1]), ood=True)
    a, b = _evaluate(model, ind), _evaluate(model, ood)
    error = np.linalg.norm(a["keypoints"] - ind["keypoints"].numpy(), axis=-1).mean()
    labels = np.r_[np.zeros(test), np.ones(test)]
    return {"steps": steps, "preset": preset_name, "regressor": regressor, "final_loss": history[-1],
            "in_distribution_mean_error": float(error),
            "log_likelihood_in_distribution": float(np.mean(a["log_likelihood"])),
            "log_likelihood_out_of_distribution": float(np.mean(b["log_likelihood"])),
            "ood_auroc": auroc(-np.r_[a["log_likelihood"], b["log_likelihood"]], labels > 0),
            "gt_log_likelihood_in_distribution": float(np.mean(a["gt_log_likelihood"])),
            "gt_log_likelihood_out_of_distribution": float(np.mean(b["gt_log_likelihood"])),
            "gt_ood_auroc": auroc(-np.r_[a["gt_log_likelihood"], b["gt_log_likelihood"]], labels > 0)}


def lspet_demo(data: str, steps: int = 400, train: int = 1000, test: int = 200, batch_size: int = 16,
               preset_name: str = "tiny", seed: int = 0, init: str | None = None, regressor: str = "integral") -> dict:
    """Train the regression variant on LSPET pool images; PCK@0.2 and failure AUROC on test images.

    ``init``: a heatmap checkpoint whose pose network initialises the backbone (its preset is used).
    """
    torch.manual_seed(seed)
    start = load_checkpoint(init) if init else None
    config = start.model_config if start else preset(preset_name)
    train_cache = CropCache(load_samples("lspet", data, "pool")[:train], config.input_size)
    test_cache = CropCache(load_samples("lspet", data, "test")[:test], config.input_size, margin=1.0)
    model = RegressionPoseModel(config, LSP14, regressor)
    if start:
        model.backbone.load_state_dict(start.pose.state_dict())
    history = fit_regression(model, crop_batches(train_cache, LSP14, batch_size, seed), steps)
    batch = crop_units(test_cache.batch(np.arange(len(test_cache)), LSP14, 1.0, None, np.random.default_rng(0)),
                       config.input_size)
    result = _evaluate(model, batch)
    gt, labelled = batch["keypoints"].numpy(), batch["labelled"].numpy() > 0
    correct = correct_keypoints(result["keypoints"], gt, labelled, torso_size(gt, labelled, LSP14), 0.2)
    total, _, per_image = pck(correct)
    evaluated = np.isfinite(per_image)
    return {"steps": steps, "preset": config.to_dict(), "init": init, "regressor": regressor, "train_images": len(train_cache),
            "test_images": len(test_cache),
            "first_loss": history[0], "final_loss": history[-1], "pck@0.2": total,
            "failures": int((per_image[evaluated] < 0.5).sum()),
            "failure_auroc": auroc(-result["log_likelihood"][evaluated], per_image[evaluated] < 0.5),
            "mean_log_likelihood": float(np.mean(result["log_likelihood"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vl4pose.regression.demo", description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=["hand", "lspet"])
    parser.add_argument("--data", default="../shared/data/lspet")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--train", type=int, default=1000, help="LSPET pool images to train on")
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--regressor", choices=["integral", "fc"], default="integral")
    parser.add_argument("--init", help="LSPET: heatmap checkpoint initialising the backbone")
    parser.add_argument("--train-images", type=int, default=0, help="hand: fixed training set size (0 = fresh hands)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if args.which == "hand":
        report = hand_demo(args.steps, preset_name=args.preset, test=args.test, regressor=args.regressor,
                           train_images=args.train_images)
    else:
        report = lspet_demo(args.data, args.steps, args.train, args.test, preset_name=args.preset, init=args.init,
                            regressor=args.regressor)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
