"""The scorer as ONNX graphs for devices: the float export (:mod:`vl4pose.onnx.export`), its int8 variant
(:mod:`vl4pose.onnx.quantize`) and their benchmark against the torch Predictor (:mod:`vl4pose.onnx.bench`).
The runtime that scores with them is :mod:`vl4pose.scorer` (docs/ON_DEVICE.md)."""
