"""The on-device scorer: an exported ONNX graph + NumPy, Pillow and onnxruntime; no torch.

Everything but the network is :class:`vl4pose.pipeline.PosePipeline`, the same code the torch
:class:`~vl4pose.predictor.Predictor` runs, so the two agree to float rounding of the network.

Command line (what a device runs; imports no torch)::

    python -m vl4pose.scorer --model model.onnx IMAGES... [--below SCORE] [--json] [--threads 1]

prints one line (or JSON object) per image; with ``--below`` only the images whose calibrated score is
below SCORE (the ones worth sending back for labelling). Exit status 1 when an image could not be read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from vl4pose.errors import ConfigError, VL4PoseError
from vl4pose.pipeline import NetworkArrays, PosePipeline
from vl4pose.pipeline_config import PredictorConfig, add_pipeline_options, config_from_args
from vl4pose.postprocess import Calibration
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)

SIDECAR_KEYS = ("format", "skeleton", "calibration", "input_size", "heatmap_size", "sigma", "input", "outputs")


def read_sidecar(model: str | Path) -> dict:
    """The JSON beside ``model.onnx`` (``model.json``), checked for what the scorer needs."""
    path = Path(model).with_suffix(".json")
    if not path.is_file():
        raise ConfigError(f"{path} not found: the scorer needs the sidecar JSON `vl4pose export-onnx` writes beside "
                          f"{Path(model).name}; copy both files")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); export the model again") from exc
    missing = [key for key in SIDECAR_KEYS if key not in meta]
    if missing:
        raise ConfigError(f"{path} lacks {missing}; export the model again with this version")
    if meta["format"] != 1:
        raise ConfigError(f"{path} has sidecar format {meta['format']}, this scorer reads 1")
    return meta


class OnnxScorer(PosePipeline):
    """Scores and refines poses with an exported graph on onnxruntime's CPU provider.

    Args:
        model: the ``.onnx`` file (its ``.json`` sidecar beside it).
        config: as the Predictor's (``device`` is ignored).
        threads: onnxruntime intra-op threads (0: onnxruntime's default, all cores).
    """

    def __init__(self, model: str | Path, config: PredictorConfig | None = None, threads: int = 0) -> None:
        import onnxruntime as ort  # deferred: an optional dependency (the [onnx] extra), needed only to score

        model = Path(model)
        if not model.is_file():
            raise ConfigError(f"ONNX model {model} not found; write it with `vl4pose export-onnx`")
        self.meta = read_sidecar(model)
        super().__init__(Skeleton.from_dict(self.meta["skeleton"]), Calibration(**self.meta["calibration"]),
                         int(self.meta["input_size"]), int(self.meta["heatmap_size"]), float(self.meta["sigma"]),
                         config, self.meta.get("decoder", "parabola"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.model_path = model

    def network(self, crops: np.ndarray, bones_for: int) -> NetworkArrays:
        heatmaps, mean, logvar = self.session.run(list(self.meta["outputs"]), {self.meta["input"]: crops})
        return NetworkArrays(heatmaps, mean[:bones_for], logvar[:bones_for])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vl4pose.scorer", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True, help="the .onnx written by `vl4pose export-onnx`")
    parser.add_argument("--below", type=float, help="report only images whose calibrated score is below this")
    parser.add_argument("--json", action="store_true", help="one JSON object per line, with the refined pose")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1; 0 = all cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    add_pipeline_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args, batch_size=args.batch_size, workers=1)
        scorer = OnnxScorer(args.model, config, threads=args.threads)
    except VL4PoseError as exc:
        log.error("%s", exc)
        return 2
    failed = False
    for start in range(0, len(args.images), args.batch_size):
        chunk = args.images[start:start + args.batch_size]
        for image, result in zip(chunk, scorer.predict_batch(chunk)):
            if isinstance(result, Exception):
                failed = True
                print(json.dumps({"image": image, "error": str(result)}) if args.json else f"{image}\terror\t{result}")
                continue
            if args.below is not None and not result.score < args.below:
                continue
            if args.json:
                print(json.dumps({"image": image, **result.to_dict()}))
            else:
                print(f"{image}\t{result.score:.6f}\t{result.log_likelihood:.4f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
