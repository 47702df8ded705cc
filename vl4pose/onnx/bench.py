"""``vl4pose bench-onnx``: the ONNX scorer (float and int8) against the torch Predictor.

Speed: images/s through ``predict_batch`` on LSPET test files (automatic person box, flip test: the
product's path) with the same number of CPU threads for torch and onnxruntime. Accuracy: PCK@0.2 and
failure AUROC (:func:`vl4pose.evaluate.evaluate`) on the LSPET test split for all three, and how closely
the ONNX scorers reproduce the Predictor (Spearman of the scores, keypoint distances, score differences).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vl4pose.data import load_samples
from vl4pose.evaluate import evaluate, predict_samples
from vl4pose.onnx.export import export_onnx
from vl4pose.onnx.quantize import calibration_crops, quantize_onnx
from vl4pose.predictor import Predictor, PredictorConfig
from vl4pose.scorer import OnnxScorer

log = logging.getLogger(__name__)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no tie correction: scores are continuous)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(reference: list, other: list) -> dict:
    """How closely ``other``'s predictions reproduce ``reference``'s (same images, readable ones only)."""
    pairs = [(r, o) for r, o in zip(reference, other) if not isinstance(r, Exception) and not isinstance(o, Exception)]
    ref_scores = np.array([r.score for r, _ in pairs])
    scores = np.array([o.score for _, o in pairs])
    distance = np.concatenate([np.linalg.norm(r.refined - o.refined, axis=1) for r, o in pairs])
    return {"images": len(pairs), "spearman": spearman(ref_scores, scores),
            "keypoints_within_0.5px": float((distance <= 0.5).mean()), "keypoint_distance_max_px": float(distance.max()),
            "score_difference_max": float(np.abs(ref_scores - scores).max()),
            "log_likelihood_difference_max": float(max(abs(r.log_likelihood - o.log_likelihood) for r, o in pairs))}


def images_per_second(engine, files: list[Path], repeats: int = 1) -> float:
    """Best of ``repeats`` timed ``predict_batch`` runs over ``files`` after a warm-up on two of them."""
    engine.predict_batch(files[:2])
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        engine.predict_batch(files)
        best = min(best, time.perf_counter() - start)
    return len(files) / best


class _Replay:
    """Hands :func:`vl4pose.evaluate.evaluate` predictions already made (no second pass over the images)."""

    def __init__(self, skeleton, predictions: list) -> None:
        self.skeleton, self.predictions = skeleton, predictions

    def predict_batch(self, images: list, boxes: list | None = None) -> list:
        assert len(images) == len(self.predictions)
        return self.predictions


def run_bench_onnx(checkpoint: str, data: str, folder: Path, speed_images: int, eval_images: int, threads: int,
                   box: str, calibration_images: int, repeats: int, method: str = "percentile") -> dict:
    """Every figure of the command as one dict; the .onnx files are written into ``folder``."""
    torch.set_num_threads(threads)
    float_path, int8_path = folder / "model.onnx", folder / "model.int8.onnx"
    if not float_path.exists():
        export_onnx(checkpoint, float_path)
    if not int8_path.exists():
        crops = calibration_crops(float_path, data, "val", calibration_images)  # whole image, person, ...
        quantize_onnx(float_path, int8_path, crops, method=method, reference_crops=crops[1::2])
    config = PredictorConfig(device="cpu", workers=1)
    engines = {"torch": Predictor(checkpoint, config), "onnx_float": OnnxScorer(float_path, config, threads),
               "onnx_int8": OnnxScorer(int8_path, config, threads)}
    files = [Path(s.image) for s in load_samples("lspet", data, "test")[:speed_images]]
    report: dict = {"threads": threads, "speed_images": len(files), "box_for_speed": "auto, flip test",
                    "int8": json.loads(int8_path.with_suffix(".json").read_text()).get("quantization"),
                    "bytes": {"onnx_float": float_path.stat().st_size, "onnx_int8": int8_path.stat().st_size}}
    report["images_per_s"] = {name: images_per_second(engine, files, repeats) for name, engine in engines.items()}
    report["speed_up_vs_torch"] = {name: v / report["images_per_s"]["torch"] for name, v in report["images_per_s"].items()}
    samples = load_samples("lspet", data, "test")[:eval_images]
    predictions = {name: predict_samples(engine, samples, box) for name, engine in engines.items()}
    report["agreement_with_torch"] = {name: agreement(predictions["torch"], predictions[name])
                                      for name in ("onnx_float", "onnx_int8")}
    report["share_below_score_0.1"] = {name: float(np.mean([p.score < 0.1 for p in preds if not isinstance(p, Exception)]))
                                       for name, preds in predictions.items()}
    report["accuracy"] = {}
    for name, engine in engines.items():
        result = evaluate(_Replay(engine.skeleton, predictions[name]), samples, box)
        report["accuracy"][name] = {"images": result["images"], "box": box, "pck@0.2": result["raw"]["pck@0.2"],
                                    "refined_pck@0.2": result["refined"]["pck@0.2"],
                                    "failure_auroc": result["raw"]["failure_auroc"]}
    return report


def format_report(report: dict) -> str:
    """A readable table of :func:`run_bench_onnx`'s figures."""
    lines = [f"{'engine':12s} {'images/s':>9s} {'x torch':>8s} {'MB':>6s} {'PCK@0.2':>8s} {'refined':>8s} {'AUROC':>7s}"]
    for name, speed in report["images_per_s"].items():
        acc = report["accuracy"][name]
        size = report["bytes"].get(name)
        lines.append(f"{name:12s} {speed:9.2f} {report['speed_up_vs_torch'][name]:8.2f} "
                     f"{(size / 1e6 if size else float('nan')):6.2f} {100 * acc['pck@0.2']:8.2f} "
                     f"{100 * acc['refined_pck@0.2']:8.2f} {acc['failure_auroc']:7.3f}")
    for name, agree in report["agreement_with_torch"].items():
        lines.append(f"{name} vs torch on {agree['images']} images: Spearman {agree['spearman']:.5f}, "
                     f"{100 * agree['keypoints_within_0.5px']:.2f}% keypoints within 0.5 px "
                     f"(max {agree['keypoint_distance_max_px']:.2f} px), score max diff {agree['score_difference_max']:.2e}")
    lines.append("share of images below score 0.1: " + ", ".join(
        f"{name} {100 * v:.1f}%" for name, v in report["share_below_score_0.1"].items()))
    lines.append(f"{report['threads']} thread(s); speed on {report['speed_images']} test images ({report['box_for_speed']}); "
                 f"accuracy on {report['accuracy']['torch']['images']} test images, box {report['accuracy']['torch']['box']}")
    return "\n".join(lines)


def bench_onnx_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="LSPET folder (joints.mat, images/, split.json)")
    p.add_argument("--out-dir", help="keep model.onnx and model.int8.onnx here (default: a temporary folder); "
                                     "existing ones are reused")
    p.add_argument("--speed-images", type=int, default=40)
    p.add_argument("--eval-images", type=int, default=1000, help="test images for accuracy (default: the whole split)")
    p.add_argument("--box", choices=["gt", "auto"], default="gt", help="person box for the accuracy figures")
    p.add_argument("--calibration-images", type=int, default=200, help="LSPET val images for int8 calibration")
    p.add_argument("--method", default="percentile", choices=["minmax", "percentile", "entropy"],
                   help="int8 activation range calibration (default percentile)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per engine (best kept)")
    p.add_argument("--json", action="store_true")


def run_command(args: argparse.Namespace) -> int:
    threads = args.threads or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out_dir) if args.out_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report = run_bench_onnx(args.checkpoint, args.data, folder, args.speed_images, args.eval_images, threads,
                                args.box, args.calibration_images, args.repeats, args.method)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
