"""``vl4pose bench``'s ranking figure: real image files through ``Predictor.predict_batch`` (decoding, the
automatic person box, the network passes, likelihood, refinement), in images per second."""

from __future__ import annotations

import time
from pathlib import Path

from vl4pose.checkpoint import Checkpoint
from vl4pose.errors import DataError
from vl4pose.predictor import Predictor, PredictorConfig


def bench_rank(ckpt: Checkpoint, data: str, images: int, batch_size: int, device: str | None = None,
               blazepose: bool = False) -> dict:
    """Images per second through ``Predictor.predict_batch`` on real files (automatic person box; with
    ``blazepose``, the BlazePose second opinion too)."""
    folder = Path(data) / "images"
    files = sorted(folder.glob("*.jpg"))[:images]
    if not files:
        raise DataError(f"no images in {folder}; pass --data with the LSPET folder")
    config = PredictorConfig(batch_size=batch_size, device=device, blazepose=blazepose)
    predictor = _CountingPredictor(ckpt, config)
    predictor.predict_batch(files[:2])
    predictor.finding_crops = 0
    start = time.perf_counter()
    results = predictor.predict_batch(files)
    seconds = time.perf_counter() - start
    finding = predictor.finding_crops / len(files)
    return {"rank_images_per_s": len(files) / seconds, "rank_images": len(files),
            "rank_errors": sum(isinstance(r, Exception) for r in results), "rank_box": "auto",
            "rank_finding_passes_per_image": finding,
            "rank_passes": f"{finding:.2f} person-finding passes per image (at most {config.box_passes}) unflipped, "
                           f"the final crop {'flipped' if config.flip else 'unflipped'} at {len(config.scales)} "
                           f"scale(s){', BlazePose first' if blazepose else ''}"}


class _CountingPredictor(Predictor):
    """A Predictor that counts the crops of its unflipped (person-finding) passes."""

    finding_crops = 0

    def _forward(self, arrays, windows, flip):  # noqa: ANN001, ANN202 (the parent's signature)
        if not flip:
            self.finding_crops += len(arrays)
        return super()._forward(arrays, windows, flip)
