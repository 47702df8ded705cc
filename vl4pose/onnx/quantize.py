"""The int8 (static QDQ) variant of an exported scorer graph (:mod:`vl4pose.onnx.export`).

``vl4pose quantize-onnx --model model.onnx --out model.int8.onnx --data DIR`` calibrates onnxruntime's static
QDQ quantisation on LSPET ``val`` crops made by the scorer's own crop path (dynamic quantisation would leave
the convolutions, nearly all of the compute, in float). Like the export, it writes temporary siblings and
renames them into place; an existing output is an error, never overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import uuid
from pathlib import Path

import numpy as np

from vl4pose.crop import crop_batch, image_window, person_window
from vl4pose.data import load_samples
from vl4pose.data.sample import box_from_keypoints
from vl4pose.errors import ConfigError, ImageError
from vl4pose.onnx.export import INPUT, OUTPUTS, publish, refuse_existing, sidecar_path
from vl4pose.pipeline import NetworkArrays, analyse_heatmaps
from vl4pose.postprocess import DEFAULT_DECODER, Calibration
from vl4pose.scorer import read_sidecar
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)


QUANTIZED_SCOPE = "/pose/"
"""Only the pose network's nodes are quantised: the bone head (``/net/...``, a few percent of the compute) stays
float, so the bone-length Gaussians the likelihood divides by keep their precision."""
FLOAT_NODES = ("/pose/out", "/pose/heads", "/pose/stem/stem.0", "/pose/Sub", "/pose/Div")
"""...and so do the input normalisation and first convolution and the heatmap head (its residual block and the
output convolutions: peak values feed a softmax at temperature ~0.1). Measured on the final CPU model (LSPET test,
docs/RESULTS.md): PCK@0.2 -0.6 points with these float, -1.2 with only the output convolutions float."""


QUANTIZED_OPS = ("Conv", "Add", "MaxPool", "Resize", "Relu", "Mul", "Sub", "Div")
"""Convolutions and what lies between them (residual adds, pooling, up-sampling, activations, input scaling): the
tensors stay int8 from one convolution to the next instead of being re-quantised around each (measured: 1.5x the
float graph's speed on one thread, against 1.1x with the convolutions alone)."""


def quantize_onnx(model: str | Path, out: str | Path, crops: np.ndarray, op_types: tuple[str, ...] = QUANTIZED_OPS,
                  float_nodes: tuple[str, ...] = FLOAT_NODES, method: str = "percentile",
                  reference_crops: np.ndarray | None = None) -> tuple[Path, Path]:
    """Static QDQ int8 quantisation of an exported graph: per-channel int8 weights, uint8 activations whose ranges
    ``method`` (``minmax``, ``percentile``, ``entropy``) calibrates on ``crops`` (B, 3, S, S) float32. Quantised:
    the ``op_types`` nodes of the pose network (:data:`QUANTIZED_SCOPE`) except those whose names start with one
    of ``float_nodes``. Writes ``out`` and its sidecar (the float one's, with the quantisation recorded).

    With ``reference_crops`` (validation person crops, like the ones calibration scores) the calibrated score's
    reference becomes the int8 graph's own sorted log-likelihoods of them, so that a score threshold means the
    same share of validation images for both graphs (temperature and placement threshold are kept)."""
    import onnx  # deferred, like onnxruntime: optional dependencies, only quantisation needs them
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model, out = Path(model), Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out} must end in .onnx")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {sorted(methods)}")
    source_meta = sidecar_path(model)
    if not model.is_file() or not source_meta.is_file():
        raise ConfigError(f"{model} or its sidecar {source_meta} is missing; run `vl4pose export-onnx` first")
    refuse_existing(out, sidecar_path(out))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT: crops[i:i + 8]} for i in range(0, len(crops), 8)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    tag = uuid.uuid4().hex[:8]
    tmp_pre, tmp_model = out.parent / f".{out.name}.pre-{tag}", out.parent / f".{out.name}.tmp-{tag}"
    tmp_meta = out.parent / f".{sidecar_path(out).name}.tmp-{tag}"
    try:
        quant_pre_process(str(model), str(tmp_pre), skip_symbolic_shape=True)
        nodes = [node.name for node in onnx.load(str(tmp_pre)).graph.node
                 if node.op_type in op_types and node.name.startswith(QUANTIZED_SCOPE)
                 and not node.name.startswith(float_nodes)]
        with contextlib.redirect_stdout(sys.stderr):  # the calibrators print progress; stdout is for results
            quantize_static(str(tmp_pre), str(tmp_model), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(op_types), nodes_to_quantize=nodes,
                            calibrate_method=methods[method])
        meta = json.loads(source_meta.read_text())
        meta["quantization"] = {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8",
                                "calibration": method, "calibration_crops": int(len(crops)), "op_types": list(op_types),
                                "quantized_nodes": len(nodes), "float_nodes": list(float_nodes),
                                "float_model": model.name}
        if reference_crops is not None and len(reference_crops) >= 2:
            meta["calibration"]["reference"] = reference_log_likelihoods(tmp_model, meta, reference_crops)
            meta["quantization"]["reference"] = f"re-fitted on this graph's log-likelihoods of {len(reference_crops)} crops"
        tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        refuse_existing(out, sidecar_path(out))
        publish({tmp_model: out, tmp_meta: sidecar_path(out)})
    except BaseException:
        for path in (tmp_model, tmp_meta):
            path.unlink(missing_ok=True)
        raise
    finally:
        tmp_pre.unlink(missing_ok=True)
    log.info("wrote %s (%.1f MB), calibrated on %d crops", out, out.stat().st_size / 1e6, len(crops))
    return out, sidecar_path(out)


def reference_log_likelihoods(model: Path, meta: dict, crops: np.ndarray, batch: int = 16) -> list[float]:
    """Sorted expected log-likelihoods of (B, 3, S, S) crops through ``model`` (no flip test, as calibration)."""
    import onnxruntime as ort  # deferred: an optional dependency, only export and quantisation need it

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    skeleton, calibration = Skeleton.from_dict(meta["skeleton"]), Calibration(**meta["calibration"])
    values = []
    for start in range(0, len(crops), batch):
        out = NetworkArrays(*session.run(list(OUTPUTS), {INPUT: crops[start:start + batch]}))
        poses = analyse_heatmaps(out, skeleton, calibration, decoder=meta.get("decoder", DEFAULT_DECODER),
                                 sigma=float(meta["sigma"]))
        values += [float(v) for v in poses.log_likelihood]
    return sorted(values)


def calibration_crops(model: str | Path, data: str | Path, split: str = "val", limit: int = 200) -> np.ndarray:
    """(2B, 3, S, S) float32 crops of ``limit`` images of an LSPET split for int8 calibration: for each image the
    whole-image window (what the person-finding pass sees) and the annotated person window (the final pass), in
    that order (``[1::2]`` are the person crops), through the scorer's own crop path."""
    size = int(read_sidecar(model)["input_size"])
    images, windows = [], []
    for sample in load_samples("lspet", data, split)[:limit]:
        try:
            image = sample.load_image()
        except ImageError as exc:
            log.warning("%s", exc)
            continue
        shape = (image.shape[1], image.shape[0])
        box = sample.box if sample.box is not None else box_from_keypoints(sample.keypoints, sample.labelled)
        images += [image, image]
        windows += [image_window(shape), person_window(box, shape)]
    return crop_batch(images, windows, size)


def quantize_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="float .onnx written by export-onnx")
    p.add_argument("--out", required=True, help="the int8 .onnx to write")
    p.add_argument("--data", required=True, help="LSPET folder (joints.mat, images/, split.json)")
    p.add_argument("--split", default="val", help="calibration split (default val)")
    p.add_argument("--limit", type=int, default=200, help="calibration images (default 200)")
    p.add_argument("--method", default="percentile", choices=["minmax", "percentile", "entropy"],
                   help="activation range calibration (default percentile: 99.999 %% of the values)")


def run_quantize(args: argparse.Namespace) -> int:
    crops = calibration_crops(args.model, args.data, args.split, args.limit)  # whole image, person, ...
    model, meta = quantize_onnx(args.model, args.out, crops, method=args.method, reference_crops=crops[1::2])
    print(json.dumps({"model": str(model), "sidecar": str(meta), "bytes": model.stat().st_size}, indent=2))
    return 0
