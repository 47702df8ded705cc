"""BlazePose in its own process: runs under the ``.mpvenv`` interpreter (``mediapipe==0.10.14`` needs protobuf < 5,
which the project's ONNX packages cannot share a virtualenv with), so it imports nothing from this package.

Protocol on stdin/stdout, one image at a time: the request is a header of two little-endian uint32, height and
width, then height x width x 3 RGB bytes; the reply is a little-endian uint32 length, then that many bytes of JSON:
``null`` (no person found) or 33 ``[x, y]`` landmarks in image pixels. EOF on stdin ends the process.
"""

import json
import struct
import sys

import numpy as np


def main() -> int:
    import mediapipe as mp  # noqa: PLC0415 (the interpreter of .mpvenv has it; ours may not)

    pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.3)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(8)
        if len(header) < 8:
            return 0
        height, width = struct.unpack("<II", header)
        data = stdin.read(height * width * 3)
        if len(data) < height * width * 3:
            return 1
        image = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
        result = pose.process(image)
        landmarks = None
        if result.pose_landmarks is not None:
            landmarks = [[p.x * width, p.y * height] for p in result.pose_landmarks.landmark]
        reply = json.dumps(landmarks).encode()
        stdout.write(struct.pack("<I", len(reply)) + reply)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
