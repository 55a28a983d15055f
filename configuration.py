"""ELECTRA model configuration: size presets, the derived generator, Hugging Face `config.json`.

The JSON keys and their defaults are those of Hugging Face's `ElectraConfig`, so a folder written
here opens in transformers and a released ELECTRA's `config.json` opens here.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from json_input import JsonInputError, parse_json_bytes
from safe_io import UserError

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


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a size


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_positive_integer(value: Any) -> bool:
    return _is_integer(value) and value > 0


def _positive_number(value: Any) -> bool:
    return _is_finite_number(value) and value > 0


def _dropout_rate(value: Any) -> bool:
    return _is_finite_number(value) and 0 <= value < 1


# What each field must hold (the one place config values are checked, for config.json files and
# for presets alike), as (requirement in words, test).
_FIELD_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{name: ("a positive integer", is_positive_integer)
       for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")},
    "hidden_act": (f"one of {SUPPORTED_ACTIVATIONS}", lambda value: value in SUPPORTED_ACTIVATIONS),
    "hidden_dropout_prob": ("a probability in [0, 1)", _dropout_rate),
    "attention_probs_dropout_prob": ("a probability in [0, 1)", _dropout_rate),
    "initializer_range": ("a positive finite number", _positive_number),
    "layer_norm_eps": ("a positive finite number", _positive_number),
    "pad_token_id": ("a token id (an integer >= 0)", lambda value: _is_integer(value) and value >= 0),
}
# Keys of Hugging Face's ElectraConfig that change the model but have one supported value here.
_FIXED_KEYS = {"model_type": "electra", "position_embedding_type": "absolute"}


class ConfigError(UserError):
    """A configuration file or value that cannot describe an ELECTRA model."""


def read_json_file(path: str) -> Any:
    """A config file's JSON value; one `ConfigError` naming the file if it cannot be read."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return parse_json_bytes(raw)
    except JsonInputError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None


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
        for name, (requirement, accepts) in _FIELD_RULES.items():
            value = getattr(self, name)
            if not accepts(value):
                raise ConfigError(f"{name} must be {requirement}, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.pad_token_id >= self.vocab_size:
            raise ConfigError(f"pad_token_id must be a token id below vocab_size {self.vocab_size}, "
                              f"got {self.pad_token_id}")

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
        for key, supported in _FIXED_KEYS.items():
            if content.get(key, supported) != supported:
                raise ConfigError(f"{source}: {key} is {content[key]!r}, expected {supported!r}")
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
        return cls.from_dict(read_json_file(path), source=path)


@dataclass(frozen=True)
class PretrainingObjective:
    """Hyper-parameters of replaced-token detection (docs/recipe.md, Dynamic masking and The objective).

    `kind` "masked_lm" trains the generator alone on its masked-LM loss (BERT's objective), the
    control of ELECTRA's headline comparison; the discriminator is then neither run nor trained.
    """

    kind: str = "electra"
    mask_prob: float = 0.15
    discriminator_weight: float = 50.0
    generator_weight: float = 1.0
    temperature: float = 1.0
    disallow_correct: bool = False

    @property
    def detects_replaced_tokens(self) -> bool:
        return self.kind == "electra"
