"""``vl4pose bench``: speed and memory figures of the engine, as one JSON object or a readable table.

Figures (milliseconds per image unless named otherwise; medians of repeated runs):

- ``pose_forward_ms``: the pose model alone, ``single`` (batch of 1) and ``batch`` (per image in a batch).
- ``vl4pose_overhead_ms``: what VL4Pose adds on top: auxiliary net (bone head) + candidates + expected
  log-likelihood + tree-DP refinement, with the parts and the ratio to the pose forward.
- ``refine_dp_ms_k5`` / ``refine_bruteforce_ms_k5``: refinement on the full LSP-14 tree with 5 candidates
  per keypoint. The brute force is the research code's: recursion over the tree without memoisation
  (each parent candidate re-solves its children's subtrees, K^depth work, log q recomputed inline). The
  bench checks that it and the DP choose identical poses (``refine_identical``).
- ``rank_images_per_s`` (:mod:`vl4pose.bench_rank`): real LSPET files through ``Predictor.predict_batch``
  (decoding, the product's automatic person box, network, likelihood, refinement).
- ``train_step_ms``: forward + backward of a batch (heatmap loss), per image, with the trunk in fp32 and in bf16
  autocast (``None`` where the device has no native bf16): what ``--precision`` buys in training.
- ``egl_backward_ms``: one image forward + backward through the pose model, the per-image cost EGL++
  would add (why it is not among the strategies).
- ``peak_rss_mb`` and the machine (cores, torch threads).

Speed does not depend on the weights, so the default model is a randomly initialised ``--preset``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vl4pose.bench_rank import bench_rank
from vl4pose.checkpoint import Calibration, Checkpoint, load_checkpoint
from vl4pose.cli_options import add_device_option
from vl4pose.device import machine_info, prepare_module, resolve_device, to_input, training_bf16, trunk_autocast
from vl4pose.heads import build_heads
from vl4pose.inference import run_network
from vl4pose.likelihood import Candidates, expected_log_likelihood, find_candidates
from vl4pose.models import build_pose, preset
from vl4pose.refine import refine
from vl4pose.skeletons import LSP14, Skeleton

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class BenchConfig:
    preset: str = "cpu"
    checkpoint: str | None = None
    batch_size: int = 16
    repeats: int = 5
    refine_images: int = 20
    rank_images: int = 64
    data: str = "../shared/data/lspet"
    device: str | None = None
    blazepose: bool = False


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` (CUDA work is waited for, so GPU timings are real)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_model(config: BenchConfig) -> Checkpoint:
    """The checkpoint to time: ``config.checkpoint``, or a randomly initialised ``config.preset`` on LSP-14."""
    if config.checkpoint:
        return load_checkpoint(config.checkpoint)
    torch.manual_seed(0)
    model_config = preset(config.preset)
    return Checkpoint(None, model_config, LSP14, build_pose(model_config, LSP14.num_keypoints).eval(),
                      build_heads([], model_config, LSP14).eval(), Calibration())


@torch.no_grad()
def bench_network(ckpt: Checkpoint, batch_size: int, repeats: int, device: torch.device | None = None) -> dict:
    """Pose forward (unflipped and with the flip test) and VL4Pose overhead, single image and per image in a
    batch. The overhead (bone head + candidates + expectation + refinement) is compared with one unflipped
    forward; on CUDA the trunk runs as the product runs it (bf16 autocast, channels-last)."""
    device = device or torch.device("cpu")
    size, cal, skeleton = ckpt.model_config.input_size, ckpt.calibration, ckpt.skeleton
    pose = prepare_module(ckpt.pose, device).eval()
    bones = ckpt.heads["bones"].to(device).eval()
    perm = skeleton.flip_permutation()

    def forward_fn(images: torch.Tensor):
        with trunk_autocast(device):
            return pose(to_input(images, device))

    out: dict = {"pose_forward_ms": {"batch_size": batch_size}, "vl4pose_overhead_ms": {"batch_size": batch_size},
                 "flip_forward_ms": {"batch_size": batch_size}, "device": str(device)}
    for mode, n in (("single", 1), ("batch", batch_size)):
        images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        output = forward_fn(images)
        heatmaps, features = output.heatmaps[-1].float().cpu(), [f.float() for f in output.features]
        mean, logvar = (t.float().cpu() for t in bones.params(features))
        heat = float(heatmaps.shape[-1])
        cands = find_candidates(heatmaps, cal.max_candidates)
        log_probs = cands.log_probs(cal.temperature)
        parts = {
            "aux_net": median_seconds(lambda: bones.params(features), repeats),
            "candidates": median_seconds(lambda: find_candidates(heatmaps, cal.max_candidates), repeats),
            "expectation": median_seconds(lambda: expected_log_likelihood(
                cands, cands.log_probs(cal.temperature), mean, logvar, skeleton, heat), repeats),
            "refinement": median_seconds(lambda: refine(cands, log_probs, mean, logvar, skeleton, heat), repeats),
        }
        forward = median_seconds(lambda: forward_fn(images), repeats) * 1000 / n
        # the product's flip-test pass itself (plain + mirrored crop in one batch, averaged; bone head included)
        out["flip_forward_ms"][mode] = median_seconds(lambda: run_network(pose, bones, images, perm), repeats) * 1000 / n
        overhead = {k: v * 1000 / n for k, v in parts.items()}
        out["pose_forward_ms"][mode] = forward
        out["vl4pose_overhead_ms"][mode] = sum(overhead.values())
        out["vl4pose_overhead_ms"][f"{mode}_parts"] = overhead
        out["vl4pose_overhead_ms"][f"{mode}_ratio"] = sum(overhead.values()) / forward
    return out


def refine_recursive(unary: np.ndarray, xy: np.ndarray, mean: np.ndarray, logvar: np.ndarray,
                     skeleton: Skeleton, size: float) -> tuple[list[int], float]:
    """The research code's brute force for one image: max over the tree by plain recursion, no memoisation.

    Args:
        unary: (K, M) log p̂ (-inf for invalid candidates); xy: (K, M, 2); mean, logvar: (E,).

    Returns:
        the chosen candidate per keypoint and the maximised objective.
    """
    children = skeleton.children()
    edge_of = {child: e for e, (_, child) in enumerate(skeleton.edges)}
    valid = [[m for m in range(unary.shape[1]) if math.isfinite(unary[k, m])] for k in range(unary.shape[0])]

    def best(node: int, a: int) -> tuple[float, dict[int, int]]:
        total, choice = float(unary[node, a]), {node: a}
        for child in children[node]:
            e = edge_of[child]
            top, top_choice = -math.inf, {}
            for b in valid[child]:
                length = math.hypot(xy[child, b, 0] - xy[node, a, 0], xy[child, b, 1] - xy[node, a, 1]) / size
                logq = -0.5 * (_LOG_2PI + logvar[e] + (length - mean[e]) ** 2 * math.exp(-logvar[e]))
                score, sub = best(child, b)
                if logq + score > top:
                    top, top_choice = logq + score, sub
            total += top
            choice.update(top_choice)
        return total, choice

    score, choice = max((best(skeleton.root, a) for a in valid[skeleton.root]), key=lambda item: item[0])
    return [choice[k] for k in range(unary.shape[0])], score


def bench_refine(images: int, repeats: int, candidates: int = 5) -> dict:
    """DP vs research-code brute force on LSP-14 with ``candidates`` valid candidates per keypoint."""
    rng = np.random.default_rng(0)
    k, e, size = LSP14.num_keypoints, LSP14.num_edges, 32.0
    xy = torch.from_numpy(rng.uniform(0, size, (images, k, candidates, 2)))
    value = torch.from_numpy(np.sort(rng.uniform(0.1, 1.0, (images, k, candidates)), axis=2)[..., ::-1].copy())
    cands = Candidates(xy, value, torch.ones(images, k, candidates, dtype=torch.bool))
    log_probs = cands.log_probs(0.1)
    mean = torch.from_numpy(rng.uniform(0.1, 0.4, (images, e)))
    logvar = torch.from_numpy(rng.uniform(-5.0, -2.0, (images, e)))
    dp = refine(cands, log_probs, mean, logvar, LSP14, size)
    arrays = [a.numpy() for a in (log_probs, xy, mean, logvar)]
    start = time.perf_counter()
    brute = [refine_recursive(arrays[0][i], arrays[1][i], arrays[2][i], arrays[3][i], LSP14, size) for i in range(images)]
    brute_ms = (time.perf_counter() - start) * 1000 / images
    identical = all(choice == dp.choice[i].tolist() and math.isclose(score, float(dp.score[i]), rel_tol=1e-9, abs_tol=1e-9)
                    for i, (choice, score) in enumerate(brute))
    batch_ms = median_seconds(lambda: refine(cands, log_probs, mean, logvar, LSP14, size), repeats) * 1000 / images
    one = Candidates(xy[:1], value[:1], cands.valid[:1])
    single_ms = median_seconds(lambda: refine(one, log_probs[:1], mean[:1], logvar[:1], LSP14, size), repeats) * 1000
    return {"refine_dp_ms_k5": batch_ms, "refine_dp_single_ms_k5": single_ms, "refine_bruteforce_ms_k5": brute_ms,
            "refine_speedup_k5": brute_ms / batch_ms, "refine_speedup_single_k5": brute_ms / single_ms,
            "refine_identical": identical, "refine_images": images,
            "refine_bruteforce": "research-code recursion over the LSP-14 tree without memoisation (K^depth)"}


def backward_ms(pose: torch.nn.Module, images: torch.Tensor, repeats: int, device: torch.device,
                bf16: bool = False) -> float:
    """ms per image of a forward + backward of (N, 3, S, S) ``images`` through ``pose`` (squared heatmaps as the
    loss, no optimiser step), the trunk in bf16 autocast with ``bf16``."""
    def step() -> None:
        pose.zero_grad(set_to_none=True)
        with trunk_autocast(device, bf16):
            output = pose(to_input(images, device))
        sum((h.float() ** 2).sum() for h in output.heatmaps).backward()

    ms = median_seconds(step, repeats) * 1000 / images.shape[0]
    pose.zero_grad(set_to_none=True)
    return ms


def bench_egl(ckpt: Checkpoint, repeats: int, device: torch.device | None = None) -> float:
    """ms for one image forward + backward through the pose model (heatmap loss, fp32)."""
    size = ckpt.model_config.input_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return backward_ms(ckpt.pose, image, repeats, device or torch.device("cpu"))


def bench_train_step(ckpt: Checkpoint, batch_size: int, repeats: int, device: torch.device) -> dict:
    """ms per image of a training forward + backward (no optimiser step), trunk in fp32 and in bf16 autocast
    (None where the device has no native bf16)."""
    pose = prepare_module(ckpt.pose, device).train()
    size = ckpt.model_config.input_size
    images = torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(2))
    native = training_bf16(device, "auto")
    out: dict = {"batch_size": batch_size, "fp32": backward_ms(pose, images, repeats, device),
                 "bf16": backward_ms(pose, images, repeats, device, bf16=True) if native else None}
    pose.eval()
    return out


def run_bench(config: BenchConfig) -> dict:
    """Every figure, as one dict (see the module docstring)."""
    device = resolve_device(config.device)
    ckpt = load_model(config)
    report: dict = {"preset": config.preset if not config.checkpoint else None, "checkpoint": config.checkpoint,
                    "model": ckpt.model_config.to_dict(), "max_candidates": ckpt.calibration.max_candidates}
    report |= bench_network(ckpt, config.batch_size, config.repeats, device)
    report |= bench_refine(config.refine_images, config.repeats)
    report |= bench_rank(ckpt, config.data, config.rank_images, config.batch_size, str(device), config.blazepose)
    report["train_step_ms"] = bench_train_step(ckpt, config.batch_size, config.repeats, device)
    report["egl_backward_ms"] = bench_egl(ckpt, config.repeats, device)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    report["machine"] = machine_info()
    return report


def format_bench(report: dict) -> str:
    """A readable table of :func:`run_bench`'s figures."""
    fwd, over, step = report["pose_forward_ms"], report["vl4pose_overhead_ms"], report["train_step_ms"]
    rows = [("pose forward, single image (ms)", f"{fwd['single']:.2f}"),
            (f"pose forward, per image in a batch of {fwd['batch_size']} (ms)", f"{fwd['batch']:.2f}"),
            ("flip-test forward, single / per image in a batch (ms)",
             f"{report['flip_forward_ms']['single']:.2f} / {report['flip_forward_ms']['batch']:.2f}")]
    for mode in ("single", "batch"):
        parts = ", ".join(f"{k} {v:.3f}" for k, v in over[f"{mode}_parts"].items())
        rows.append((f"VL4Pose overhead, {mode} (ms)", f"{over[mode]:.3f} = {100 * over[f'{mode}_ratio']:.1f}% ({parts})"))
    rows += [("refinement DP, K=5, per image in a batch (ms)", f"{report['refine_dp_ms_k5']:.4f}"),
             ("refinement DP, K=5, single image (ms)", f"{report['refine_dp_single_ms_k5']:.3f}"),
             ("refinement brute force, K=5 (ms)", f"{report['refine_bruteforce_ms_k5']:.2f}"),
             ("DP speed-up (batch / single)", f"{report['refine_speedup_k5']:.0f}x / {report['refine_speedup_single_k5']:.0f}x"),
             ("DP and brute force identical", str(report["refine_identical"])),
             ("ranking through Predictor.predict_batch (images/s)",
              f"{report['rank_images_per_s']:.1f} ({report['rank_passes']})"),
             ("training forward+backward per image in a batch, fp32 / bf16 (ms)",
              " / ".join("-" if v is None else f"{v:.2f}" for v in (step["fp32"], step["bf16"]))),
             ("EGL++ forward+backward per image (ms)", f"{report['egl_backward_ms']:.1f}"),
             ("peak RSS (MB)", f"{report['peak_rss_mb']:.0f}")]
    machine = report["machine"]
    rows.append(("machine", f"{machine['cores']} cores, {machine['torch_threads']} torch threads, {machine['cpu']}, "
                            f"device {report['device']}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:{width}s}  {value}" for name, value in rows)


def bench_options(p: argparse.ArgumentParser) -> None:
    defaults = BenchConfig()
    p.add_argument("--preset", default=defaults.preset, help="model preset timed when no --checkpoint (default cpu)")
    p.add_argument("--checkpoint", help="time this checkpoint instead of a random model of --preset")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--repeats", type=int, default=defaults.repeats)
    p.add_argument("--refine-images", type=int, default=defaults.refine_images)
    p.add_argument("--rank-images", type=int, default=defaults.rank_images)
    p.add_argument("--data", default=defaults.data, help="LSPET folder whose images/ are ranked")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--blazepose", action="store_true", help="rank with the BlazePose second opinion (evaluate's "
                   "--blazepose; needs `bash scripts/setup.sh --blazepose`)")
    add_device_option(p)


def run_bench_command(args: argparse.Namespace) -> int:
    config = BenchConfig(args.preset, args.checkpoint, args.batch_size, args.repeats, args.refine_images,
                         args.rank_images, args.data, args.device, args.blazepose)
    report = run_bench(config)
    print(json.dumps(report, indent=2) if args.json else format_bench(report))
    return 0 if report["refine_identical"] else 1
