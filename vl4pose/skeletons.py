"""Skeletons as data: keypoint names, tree edges, root and left/right flip pairs.

This module is the single source of truth for every skeleton the project knows. The order of
``edges`` fixes the layout of the auxiliary network's output (one mean and one log-variance per
edge) and the order of messages in the tree dynamic programme (parents always come before their
children).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vl4pose.errors import ConfigError


@dataclass(frozen=True)
class Skeleton:
    """A keypoint tree.

    Attributes:
        name: registry name, e.g. ``"lsp14"``.
        keypoints: K keypoint names in the dataset's order (snake_case).
        edges: E ``(parent, child)`` index pairs, topologically ordered (a parent appears as a child
            of an earlier edge, or is the root).
        root: index of the root keypoint.
        flip_pairs: ``(left, right)`` index pairs swapped by a horizontal flip.
        torso: ``(l_shoulder, r_hip, r_shoulder, l_hip)`` indices for the PCK torso normaliser, or
            ``None`` where the skeleton has no torso.
        head: ``(head_top, neck)`` indices used to estimate a head box for PCKh, or ``None``.
    """

    name: str
    keypoints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    root: int
    flip_pairs: tuple[tuple[int, int], ...] = ()
    torso: tuple[int, int, int, int] | None = None
    head: tuple[int, int] | None = None
    parents: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        parents = [-1] * k
        seen = {self.root}
        for parent, child in self.edges:
            if parent not in seen or child in seen:
                raise ConfigError(
                    f"skeleton {self.name!r}: edge ({parent}, {child}) breaks the tree order; "
                    "list edges parent-first, each child once"
                )
            parents[child] = parent
            seen.add(child)
        if len(seen) != k:
            missing = [self.keypoints[i] for i in range(k) if i not in seen]
            raise ConfigError(f"skeleton {self.name!r}: keypoints not reached from the root: {missing}")
        object.__setattr__(self, "parents", tuple(parents))

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def index(self, name: str) -> int:
        """Index of a keypoint by name (case, spaces and hyphens ignored)."""
        key = normalise_name(name)
        for i, kp in enumerate(self.keypoints):
            if kp == key:
                return i
        raise ConfigError(
            f"skeleton {self.name!r} has no keypoint {name!r}; expected one of {list(self.keypoints)}"
        )

    def flip_permutation(self) -> list[int]:
        """Index map applied after a horizontal flip: ``flipped[i] = original[perm[i]]``."""
        perm = list(range(self.num_keypoints))
        for left, right in self.flip_pairs:
            perm[left], perm[right] = right, left
        return perm

    def children(self) -> list[list[int]]:
        """For each keypoint, the list of its children."""
        out: list[list[int]] = [[] for _ in self.keypoints]
        for parent, child in self.edges:
            out[parent].append(child)
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "keypoints": list(self.keypoints),
            "edges": [list(e) for e in self.edges],
            "root": self.root,
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "torso": list(self.torso) if self.torso else None,
            "head": list(self.head) if self.head else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Skeleton":
        return cls(
            name=data["name"],
            keypoints=tuple(data["keypoints"]),
            edges=tuple(tuple(e) for e in data["edges"]),  # type: ignore[misc]
            root=int(data["root"]),
            flip_pairs=tuple(tuple(p) for p in data.get("flip_pairs", [])),  # type: ignore[misc]
            torso=tuple(data["torso"]) if data.get("torso") else None,  # type: ignore[arg-type]
            head=tuple(data["head"]) if data.get("head") else None,  # type: ignore[arg-type]
        )


def normalise_name(name: str) -> str:
    """``"Right Ankle"`` / ``"right-ankle"`` -> ``"right_ankle"``."""
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def _build(name: str, keypoints: list[str], edges: list[tuple[str, str]], root: str, **extra: tuple) -> Skeleton:
    idx = {k: i for i, k in enumerate(keypoints)}
    pairs = []
    for kp in keypoints:
        if kp.startswith("left_"):
            pairs.append((idx[kp], idx["right_" + kp[5:]]))
    named = {key: tuple(idx[v] for v in value) for key, value in extra.items()}
    return Skeleton(
        name=name,
        keypoints=tuple(keypoints),
        edges=tuple((idx[p], idx[c]) for p, c in edges),
        root=idx[root],
        flip_pairs=tuple(pairs),
        **named,  # type: ignore[arg-type]
    )


def _limbs(side: str, chain: list[str]) -> list[tuple[str, str]]:
    names = [f"{side}_{c}" for c in chain]
    return list(zip(names[:-1], names[1:]))


_TORSO = ("left_shoulder", "right_hip", "right_shoulder", "left_hip")

LSP14 = _build(
    "lsp14",
    ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
     "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"],
    [("head_top", "neck"), ("neck", "left_shoulder"), *_limbs("left", ["shoulder", "elbow", "wrist"]),
     ("neck", "right_shoulder"), *_limbs("right", ["shoulder", "elbow", "wrist"]),
     *_limbs("left", ["shoulder", "hip", "knee", "ankle"]), *_limbs("right", ["shoulder", "hip", "knee", "ankle"])],
    "head_top",
    torso=_TORSO,
    head=("head_top", "neck"),
)

MPII16 = _build(
    "mpii16",
    ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
     "neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
     "left_wrist"],
    [("head_top", "neck"), ("neck", "thorax"), ("thorax", "pelvis"), ("thorax", "left_shoulder"),
     ("thorax", "right_shoulder"), *_limbs("left", ["shoulder", "elbow", "wrist"]),
     *_limbs("right", ["shoulder", "elbow", "wrist"]), ("pelvis", "left_hip"), ("pelvis", "right_hip"),
     *_limbs("left", ["hip", "knee", "ankle"]), *_limbs("right", ["hip", "knee", "ankle"])],
    "head_top",
    torso=_TORSO,
    head=("head_top", "neck"),
)

COCO17 = _build(
    "coco17",
    ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
     "right_knee", "left_ankle", "right_ankle"],
    [("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
     ("nose", "left_shoulder"), ("nose", "right_shoulder"), *_limbs("left", ["shoulder", "elbow", "wrist"]),
     *_limbs("right", ["shoulder", "elbow", "wrist"]), *_limbs("left", ["shoulder", "hip", "knee", "ankle"]),
     *_limbs("right", ["shoulder", "hip", "knee", "ankle"])],
    "nose",
    torso=_TORSO,
)

_FINGERS = {
    "thumb": ["cmc", "mcp", "ip", "tip"],
    "index": ["mcp", "pip", "dip", "tip"],
    "middle": ["mcp", "pip", "dip", "tip"],
    "ring": ["mcp", "pip", "dip", "tip"],
    "pinky": ["mcp", "pip", "dip", "tip"],
}
_HAND_KPS = ["wrist"] + [f"{f}_{j}" for f, joints in _FINGERS.items() for j in joints]
HAND21 = _build(
    "hand21",
    _HAND_KPS,
    [edge for f, joints in _FINGERS.items()
     for edge in zip(["wrist"] + [f"{f}_{j}" for j in joints[:-1]], [f"{f}_{j}" for j in joints])],
    "wrist",
)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (LSP14, MPII16, COCO17, HAND21)}


def get_skeleton(name: str) -> Skeleton:
    """Look a skeleton up by registry name."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ConfigError(f"unknown skeleton {name!r}; choose one of {sorted(SKELETONS)}") from None
