"""Model configuration, presets and construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from torch import nn

from vl4pose.errors import ConfigError
from vl4pose.models.auxnet import AuxNet
from vl4pose.models.hourglass import PoseOutput, StackedHourglass

__all__ = ["PRESETS", "ModelConfig", "PoseOutput", "build_aux", "build_pose", "count_parameters",
           "parse_model_overrides", "preset"]


@dataclass(frozen=True)
class ModelConfig:
    """Pose estimator and auxiliary network shape. Heatmaps are ``input_size / 4`` pixels square."""

    stacks: int = 1
    channels: int = 128
    input_size: int = 128
    depth: int = 4
    aux_channels: int = 64
    aux_hidden: int = 256
    sigma: float = 1.0
    """Target Gaussian standard deviation in heatmap pixels."""

    @property
    def heatmap_size(self) -> int:
        return self.input_size // 4

    def validate(self) -> "ModelConfig":
        step = 4 * 2**self.depth
        if self.input_size % step:
            raise ConfigError(f"input_size {self.input_size} must be a multiple of {step} for depth {self.depth}")
        if self.stacks < 1 or self.channels < 16:
            raise ConfigError(f"stacks must be >= 1 and channels >= 16 (got {self.stacks}, {self.channels})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known).validate()


PRESETS: dict[str, ModelConfig] = {
    # the paper's network: 2 stacks, 256 channels, 256 px input, 64 px heatmaps
    "paper": ModelConfig(stacks=2, channels=256, input_size=256, aux_channels=160, aux_hidden=512, sigma=2.0),
    # the CPU default, chosen by measuring speed against accuracy on LSPET (docs/RESULTS.md)
    "cpu": ModelConfig(stacks=1, channels=128, input_size=128, aux_channels=64, aux_hidden=192, sigma=2.0),
    # a tiny network for tests and smoke runs
    "tiny": ModelConfig(stacks=1, channels=32, input_size=64, depth=3, aux_channels=16, aux_hidden=32, sigma=1.0),
}


def preset(name: str, **overrides: object) -> ModelConfig:
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return replace(base, **overrides).validate()  # type: ignore[arg-type]


def parse_model_overrides(items: list[str]) -> dict[str, int | float]:
    """``["input_size=192", "stacks=2"]`` -> ``{"input_size": 192, "stacks": 2}``, typed as :class:`ModelConfig`'s
    fields; an unknown key or a bad value is a :class:`ConfigError` that names the keys."""
    types = {f.name: float if f.type == "float" else int for f in fields(ModelConfig)}  # annotations are strings
    overrides: dict[str, int | float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ConfigError(f"model override {item!r} is not KEY=VALUE with KEY one of {sorted(types)}, "
                              "e.g. input_size=192")
        try:
            overrides[key] = types[key](value)
        except ValueError:
            kind = "a number" if types[key] is float else "a whole number"
            raise ConfigError(f"model override {item!r}: {value!r} is not {kind}") from None
    return overrides


def build_pose(config: ModelConfig, num_keypoints: int) -> StackedHourglass:
    return StackedHourglass(num_keypoints, config.stacks, config.channels, config.depth)


def build_aux(config: ModelConfig, out_dim: int) -> AuxNet:
    return AuxNet(config.channels, config.depth + 1, out_dim, config.aux_channels, config.aux_hidden)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
