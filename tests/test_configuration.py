"""ElectraConfig: presets, the derived generator, and Hugging Face config.json compatibility."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import transformers

from configuration import ConfigError, ElectraConfig


@pytest.mark.parametrize("size, layers, hidden, heads, ffn, embedding, gen_hidden, gen_heads", [
    ("small", 12, 256, 4, 1024, 128, 64, 1),
    ("base", 12, 768, 12, 3072, 768, 256, 4),
    ("large", 24, 1024, 16, 4096, 1024, 256, 4),
])
def test_presets_and_their_generators(size, layers, hidden, heads, ffn, embedding, gen_hidden, gen_heads):
    config = ElectraConfig.from_size(size)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size, config.embedding_size) == (layers, hidden, heads, ffn, embedding)
    generator = config.generator_config()
    assert generator.hidden_size == gen_hidden
    assert generator.num_attention_heads == gen_heads
    assert generator.intermediate_size == 4 * gen_hidden
    assert generator.num_hidden_layers == layers
    assert generator.embedding_size == embedding


def test_generator_size_can_be_given_as_fraction_or_hidden_size():
    config = ElectraConfig.from_size("small")
    assert config.generator_config(hidden_fraction=1.0).hidden_size == 256  # the released small
    assert config.generator_config(hidden_size=128).num_attention_heads == 2
    with pytest.raises(ConfigError, match="multiple of 64"):
        config.generator_config(hidden_size=100)


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model size 'huge'"):
        ElectraConfig.from_size("huge")


def test_saved_config_reads_in_transformers(tmp_path: Path):
    config = ElectraConfig.from_size("base", num_hidden_layers=3, hidden_dropout_prob=0.2)
    config.save_json(str(tmp_path / "config.json"), architectures=["ElectraForPreTraining"])
    theirs = transformers.ElectraConfig.from_pretrained(tmp_path)
    for key, value in config.to_dict().items():
        assert getattr(theirs, key) == value, key


def test_transformers_config_reads_here(tmp_path: Path):
    theirs = transformers.ElectraConfig(hidden_size=384, num_attention_heads=6, intermediate_size=1536,
                                        embedding_size=192, num_hidden_layers=5, hidden_act="gelu_new")
    theirs.save_pretrained(tmp_path)
    ours = ElectraConfig.from_json_file(str(tmp_path / "config.json"))
    for key, value in ours.to_dict().items():
        if key != "model_type":
            assert getattr(theirs, key) == value, key


def test_missing_optional_keys_take_transformers_defaults():
    ours = ElectraConfig.from_dict({"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 1,
                                    "num_attention_heads": 1, "intermediate_size": 256})
    theirs = transformers.ElectraConfig(vocab_size=100, hidden_size=64, num_hidden_layers=1,
                                        num_attention_heads=1, intermediate_size=256)
    assert ours.embedding_size == theirs.embedding_size == 128
    assert ours.layer_norm_eps == theirs.layer_norm_eps


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"model_type": "bert", "vocab_size": 1}), "model_type is 'bert'"),
    (json.dumps({"vocab_size": 100, "hidden_size": 64}), "missing required keys"),
    (json.dumps({"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 3, "intermediate_size": 256}), "not a multiple of"),
    (json.dumps({"vocab_size": "many", "hidden_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 1, "intermediate_size": 256}), "vocab_size must be a positive"),
    (json.dumps({"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 1, "intermediate_size": 256, "hidden_act": "swish"}), "hidden_act"),
])
def test_bad_config_files_give_one_clear_error_naming_the_file(tmp_path: Path, content: str, message: str):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        ElectraConfig.from_json_file(str(path))
    assert str(path) in str(error.value)


def test_missing_config_file_names_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere.json")):
        ElectraConfig.from_json_file(str(tmp_path / "nowhere.json"))


VALID = {"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1,
         "intermediate_size": 256}


@pytest.mark.parametrize("key, value, requirement", [
    ("layer_norm_eps", 0, "a positive finite number"),
    ("layer_norm_eps", -1e-12, "a positive finite number"),
    ("layer_norm_eps", float("nan"), "a positive finite number"),
    ("layer_norm_eps", float("inf"), "a positive finite number"),
    ("layer_norm_eps", "1e-12", "a positive finite number"),
    ("initializer_range", 0.0, "a positive finite number"),
    ("hidden_dropout_prob", True, r"a probability in \[0, 1\)"),
    ("hidden_dropout_prob", 1.0, r"a probability in \[0, 1\)"),
    ("hidden_dropout_prob", "0.1", r"a probability in \[0, 1\)"),
    ("attention_probs_dropout_prob", -0.1, r"a probability in \[0, 1\)"),
    ("attention_probs_dropout_prob", float("nan"), r"a probability in \[0, 1\)"),
    ("pad_token_id", "abc", r"a token id \(an integer >= 0\)"),
    ("pad_token_id", True, r"a token id \(an integer >= 0\)"),
    ("pad_token_id", -1, r"a token id \(an integer >= 0\)"),
    ("pad_token_id", 0.0, r"a token id \(an integer >= 0\)"),
    ("pad_token_id", 100, "a token id below vocab_size 100"),
    ("vocab_size", True, "a positive integer"),
    ("hidden_size", 64.0, "a positive integer"),
    ("num_hidden_layers", 0, "a positive integer"),
    ("embedding_size", None, "a positive integer"),
    ("max_position_embeddings", -512, "a positive integer"),
    ("type_vocab_size", 0, "a positive integer"),
    ("hidden_act", ["gelu"], r"one of \('gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu'\)"),
])
def test_every_field_is_checked_when_the_file_is_read(tmp_path: Path, key: str, value, requirement: str):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**VALID, key: value}))  # NaN and Infinity as Python's json writes them
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {key} must be {requirement}, got "):
        ElectraConfig.from_json_file(str(path))


def test_position_embeddings_other_than_absolute_are_refused(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**VALID, "position_embedding_type": "relative_key"}))
    with pytest.raises(ConfigError, match="position_embedding_type is 'relative_key', expected 'absolute'"):
        ElectraConfig.from_json_file(str(path))
    path.write_text(json.dumps({**VALID, "position_embedding_type": "absolute"}))
    assert ElectraConfig.from_json_file(str(path)).vocab_size == 100


def test_deeply_nested_config_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text('{"vocab_size": 100, "extra": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: not valid JSON \\(JSON nested deeper than 100"):
        ElectraConfig.from_json_file(str(path))
