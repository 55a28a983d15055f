"""ELECTRA model configuration: size presets, the derived generator, Hugging Face `config.json`.

The JSON keys and their defaults are those of Hugging Face's `ElectraConfig`, so a folder written
here opens in transformers and a released ELECTRA's `config.json` opens here.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# Sizes of docs/recipe.md, Model sizes: (layers, hidden, embedding, generator hidden fraction).
MODEL_SIZES: dict[str, tuple[int, int, int, float]] = {
    "small": (12, 256, 128, 0.25),
    "base": (12, 768, 768, 1.0 / 3.0),
    "large": (24, 1024, 1024, 0.25),
}
HEAD_SIZE = 64

_REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size")


class ConfigError(ValueError):
    """A configuration file or value that cannot describe an ELECTRA model."""


@dataclass(frozen=True)
class ElectraConfig:
    """Architecture of one ELECTRA transformer (a discriminator or a generator).

    Field defaults are Hugging Face's `ElectraConfig` defaults, which are also the `small` preset.
    """

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value <= 0) \
                    and field.name != "pad_token_id":
                raise ConfigError(f"{field.name} must be a positive integer, got {value!r}")
            if field.type == "float" and not isinstance(value, (int, float)):
                raise ConfigError(f"{field.name} must be a number, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not one of {SUPPORTED_ACTIVATIONS}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_size(cls, size: str, vocab_size: int = 30522, **overrides: Any) -> "ElectraConfig":
        """The discriminator of a named size (`small`, `base`, `large`)."""
        if size not in MODEL_SIZES:
            raise ConfigError(f"unknown model size {size!r}; expected one of {sorted(MODEL_SIZES)}")
        layers, hidden, embedding, _ = MODEL_SIZES[size]
        fields = dict(vocab_size=vocab_size, embedding_size=embedding, hidden_size=hidden,
                      num_hidden_layers=layers, num_attention_heads=hidden // HEAD_SIZE,
                      intermediate_size=4 * hidden)
        fields.update(overrides)
        return cls(**fields)

    def generator_config(self, hidden_fraction: float | None = None,
                         hidden_size: int | None = None) -> "ElectraConfig":
        """The generator that goes with this discriminator: same depth and embeddings, hidden
        size = fraction x discriminator hidden rounded to a multiple of 64 (or given directly)."""
        if hidden_size is None:
            fraction = hidden_fraction if hidden_fraction is not None else self.default_generator_fraction()
            hidden_size = max(HEAD_SIZE, round(self.hidden_size * fraction / HEAD_SIZE) * HEAD_SIZE)
        if hidden_size % HEAD_SIZE:
            raise ConfigError(f"generator hidden size {hidden_size} is not a multiple of {HEAD_SIZE}")
        return dataclasses.replace(self, hidden_size=hidden_size,
                                   num_attention_heads=hidden_size // HEAD_SIZE,
                                   intermediate_size=4 * hidden_size)

    def default_generator_fraction(self) -> float:
        """The recipe's fraction (docs/recipe.md) for the preset whose hidden size this config has."""
        for _, hidden, _, fraction in MODEL_SIZES.values():
            if hidden == self.hidden_size:
                return fraction
        return 0.25

    def to_dict(self, architectures: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Hugging Face `config.json` content; `extra` adds keys a task head needs (transformers
        keeps unknown keys as config attributes, `from_dict` ignores them)."""
        content: dict[str, Any] = {"model_type": "electra"}
        if architectures:
            content["architectures"] = list(architectures)
        content.update(extra or {})
        content.update(dataclasses.asdict(self))
        return content

    @classmethod
    def from_dict(cls, content: dict[str, Any], source: str = "config") -> "ElectraConfig":
        """Read a Hugging Face Electra `config.json` dict; unknown keys are ignored."""
        if not isinstance(content, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(content).__name__}")
        if content.get("model_type", "electra") != "electra":
            raise ConfigError(f"{source}: model_type is {content['model_type']!r}, expected 'electra'")
        missing = [k for k in _REQUIRED_KEYS if k not in content]
        if missing:
            raise ConfigError(f"{source}: missing required keys {missing}")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in content.items() if k in known})
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    def save_json(self, path: str, architectures: list[str] | None = None,
                  extra: dict[str, Any] | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(architectures, extra), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def from_json_file(cls, path: str) -> "ElectraConfig":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                content = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(content, source=path)


@dataclass(frozen=True)
class PretrainingObjective:
    """Hyper-parameters of replaced-token detection (docs/recipe.md, Dynamic masking and The objective)."""

    mask_prob: float = 0.15
    discriminator_weight: float = 50.0
    generator_weight: float = 1.0
    temperature: float = 1.0
    disallow_correct: bool = False
