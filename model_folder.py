"""Model folders in the Hugging Face layout: `config.json` + `model.safetensors`.

Parameter names are transformers' (docs/recipe.md, Parameter names), so a discriminator trained here opens in
transformers and a released ELECTRA opens here. Linear weights are stored [out, in], the
transpose of a Keras kernel. Encoder names are handled in one canonical form,
`electra.<name>`; a bare encoder (transformers' `ElectraModel`) stores them without the prefix.
QA models add their head: the plain head under transformers' `qa_outputs` names, the joint head
under `qa_head.` (XLNet's pooler names), with `joint_head`, `version_2_with_negative` and
`beam_size` as extra `config.json` keys. Sequence classifiers add transformers' `classifier.dense`
and `classifier.out_proj` with its `num_labels`, `id2label`, `label2id` and `problem_type` keys.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import huggingface_hub
import keras
import numpy as np
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from configuration import ElectraConfig, is_positive_integer, read_json_file
from modeling import (ElectraDiscriminator, ElectraForQuestionAnswering, ElectraForSequenceClassification,
                      ElectraGenerator, ElectraLayer, ElectraModel, JointQAHead)
from safe_io import UserError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PYTORCH_WEIGHTS_FILE = "pytorch_model.bin"
VOCAB_FILE = "vocab.txt"
ENCODER_PREFIX = "electra."
TIED_GENERATOR_WEIGHT = "generator_lm_head.weight"
# Tensors a folder may hold that a model without those heads simply does not use.
PRETRAINING_HEAD_PREFIXES = ("discriminator_predictions.", "generator_predictions.", "generator_lm_head.")
IGNORED_BUFFERS = ("electra.embeddings.position_ids",)
RELEASED_MODEL_NAME = re.compile(r"^google/electra-(small|base|large)-(discriminator|generator)$")
RELEASED_PAIR_NAME = re.compile(r"^google/electra-(small|base|large)$")
ARCHITECTURES = {ElectraModel: "ElectraModel", ElectraDiscriminator: "ElectraForPreTraining",
                 ElectraGenerator: "ElectraForMaskedLM"}
# The plain QA head is transformers' ElectraForQuestionAnswering; the joint head has no
# transformers class, so its folders name one that says so.
QA_ARCHITECTURES = {False: "ElectraForQuestionAnswering", True: "ElectraForQuestionAnsweringJointHead"}
# The keys a QA folder's config.json adds, with (requirement in words, test).
QA_HEAD_SETTINGS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "joint_head": ("true or false", lambda value: isinstance(value, bool)),
    "version_2_with_negative": ("true or false", lambda value: isinstance(value, bool)),
    "beam_size": ("a positive integer", is_positive_integer),
}
CLASSIFIER_ARCHITECTURE = "ElectraForSequenceClassification"


class ModelFolderError(UserError):
    """A model folder whose files do not fit the model they are loaded into."""


@dataclass(frozen=True)
class HFParameter:
    """One Keras variable and whether its Hugging Face tensor is its transpose."""

    variable: keras.Variable
    transpose: bool = False


@dataclass
class LoadReport:
    """What a load did beyond a one-to-one match: heads left newly initialised, tensors unused."""

    newly_initialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def _dense(prefix: str, layer: keras.layers.Dense) -> dict[str, HFParameter]:
    return {f"{prefix}.weight": HFParameter(layer.kernel, transpose=True),
            f"{prefix}.bias": HFParameter(layer.bias)}


def _layer_norm(prefix: str, layer: keras.layers.LayerNormalization) -> dict[str, HFParameter]:
    return {f"{prefix}.weight": HFParameter(layer.gamma), f"{prefix}.bias": HFParameter(layer.beta)}


def _joint_qa_head(prefix: str, head: JointQAHead) -> dict[str, HFParameter]:
    """XLNet's SQuAD head names (transformers' PoolerStartLogits/EndLogits/AnswerClass) under `prefix`."""
    params = {**_dense(f"{prefix}.start_logits.dense", head.start_dense),
              **_dense(f"{prefix}.end_logits.dense_0", head.end_dense_0),
              **_layer_norm(f"{prefix}.end_logits.LayerNorm", head.end_layer_norm),
              **_dense(f"{prefix}.end_logits.dense_1", head.end_dense_1)}
    if head.version_2:
        params.update(_dense(f"{prefix}.answer_class.dense_0", head.answer_dense_0))
        params[f"{prefix}.answer_class.dense_1.weight"] = HFParameter(head.answer_dense_1.kernel, transpose=True)
    return params


def _encoder_layer(prefix: str, layer: ElectraLayer) -> dict[str, HFParameter]:
    return {
        **_dense(f"{prefix}.attention.self.query", layer.query),
        **_dense(f"{prefix}.attention.self.key", layer.key),
        **_dense(f"{prefix}.attention.self.value", layer.value),
        **_dense(f"{prefix}.attention.output.dense", layer.attention_output),
        **_layer_norm(f"{prefix}.attention.output.LayerNorm", layer.attention_layer_norm),
        **_dense(f"{prefix}.intermediate.dense", layer.intermediate),
        **_dense(f"{prefix}.output.dense", layer.output_dense),
        **_layer_norm(f"{prefix}.output.LayerNorm", layer.output_layer_norm),
    }


def encoder_parameters(encoder: ElectraModel) -> dict[str, HFParameter]:
    """Canonical (`electra.`-prefixed) Hugging Face names of an encoder's variables."""
    p, emb = ENCODER_PREFIX, encoder.embeddings
    params = {
        f"{p}embeddings.word_embeddings.weight": HFParameter(emb.word_embeddings),
        f"{p}embeddings.position_embeddings.weight": HFParameter(emb.position_embeddings),
        f"{p}embeddings.token_type_embeddings.weight": HFParameter(emb.token_type_embeddings),
        **_layer_norm(f"{p}embeddings.LayerNorm", emb.layer_norm),
    }
    if encoder.embeddings_project is not None:
        params.update(_dense(f"{p}embeddings_project", encoder.embeddings_project))
    for i, layer in enumerate(encoder.encoder_layers):
        params.update(_encoder_layer(f"{p}encoder.layer.{i}", layer))
    return params


def hf_parameters(model: keras.Model) -> dict[str, HFParameter]:
    """Every variable of a model under its canonical Hugging Face name."""
    if isinstance(model, ElectraModel):
        return encoder_parameters(model)
    params = encoder_parameters(model.electra)
    if isinstance(model, ElectraDiscriminator):
        head = model.discriminator_predictions
        params.update(_dense("discriminator_predictions.dense", head.dense))
        params.update(_dense("discriminator_predictions.dense_prediction", head.dense_prediction))
    elif isinstance(model, ElectraGenerator):
        head = model.generator_predictions
        params.update(_dense("generator_predictions.dense", head.dense))
        params.update(_layer_norm("generator_predictions.LayerNorm", head.layer_norm))
        params["generator_lm_head.bias"] = HFParameter(head.output_bias)
    elif isinstance(model, ElectraForQuestionAnswering):
        params.update(_joint_qa_head("qa_head", model.qa_head) if model.joint_head
                      else _dense("qa_outputs", model.qa_outputs))
    elif isinstance(model, ElectraForSequenceClassification):
        params.update(_dense("classifier.dense", model.classifier.dense))
        params.update(_dense("classifier.out_proj", model.classifier.out_proj))
    else:
        raise TypeError(f"no Hugging Face names are defined for {type(model).__name__}")
    return params


def new_head_prefixes(model: keras.Model) -> tuple[str, ...]:
    """Names a folder may lack because they belong to a head that fine-tuning adds (QA heads)."""
    return tuple(getattr(model, "HF_NEW_HEAD_PREFIXES", ()))


def canonical_name(name: str) -> str:
    """`embeddings...`/`encoder...` (a bare ElectraModel's names) -> `electra.embeddings...`."""
    if name.startswith(("embeddings.", "embeddings_project.", "encoder.")):
        return ENCODER_PREFIX + name
    return name


def resolve_model_folder(name_or_path: str, cache_dir: str | None = None) -> str:
    """A local folder as is, or a released `google/electra-*` name: its snapshot in the Hugging
    Face cache, downloaded there first when missing. huggingface_hub does the work, so its
    settings apply: HF_HOME / HF_HUB_CACHE (where), HF_HUB_OFFLINE (never download), HF_ENDPOINT
    and HF_TOKEN."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if not RELEASED_MODEL_NAME.match(name_or_path):
        raise FileNotFoundError(f"model folder not found: {name_or_path} (expected a folder with "
                                f"{CONFIG_FILE} and {WEIGHTS_FILE}, or a name like "
                                "google/electra-base-discriminator)")
    return cached_released_model(name_or_path, cache_dir) or download_released_model(name_or_path, cache_dir)


def resolve_pretraining_folders(name_or_path: str, cache_dir: str | None = None) -> dict[str, str]:
    """{"discriminator": folder, "generator": folder} to start pretraining from: FOLDER/discriminator
    and FOLDER/generator (postprocess_pretrained_ckpt.py's output), or the two released models of
    google/electra-{small,base,large}."""
    if RELEASED_PAIR_NAME.match(name_or_path):
        return {part: resolve_model_folder(f"{name_or_path}-{part}", cache_dir)
                for part in ("discriminator", "generator")}
    if not os.path.isdir(name_or_path):
        raise FileNotFoundError(f"{name_or_path}: expected a folder with discriminator/ and generator/ model "
                                "folders, or google/electra-small, -base or -large")
    return {part: os.path.join(name_or_path, part) for part in ("discriminator", "generator")}


def _holds_model(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, CONFIG_FILE)) and any(
        os.path.isfile(os.path.join(folder, weights)) for weights in (WEIGHTS_FILE, PYTORCH_WEIGHTS_FILE))


def cached_released_model(name: str, cache_dir: str | None = None) -> str | None:
    """The snapshot of `name` that the Hugging Face cache holds with a config and weights, found
    without any network access; None if there is none."""
    try:  # (asking for the config only: the cache need not hold the repository's other files)
        folder = huggingface_hub.snapshot_download(name, cache_dir=cache_dir, local_files_only=True,
                                                   allow_patterns=[CONFIG_FILE])
    except LocalEntryNotFoundError:
        return None
    return folder if _holds_model(folder) else None


def download_released_model(name: str, cache_dir: str | None = None) -> str:
    """Download `name`'s config, vocabulary and weights (safetensors, else the older
    pytorch_model.bin) into the Hugging Face cache; one clear error when that is impossible."""
    try:
        folder = huggingface_hub.snapshot_download(name, cache_dir=cache_dir,
                                                   allow_patterns=[CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE])
        if not os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):
            folder = huggingface_hub.snapshot_download(name, cache_dir=cache_dir, allow_patterns=[PYTORCH_WEIGHTS_FILE])
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise FileNotFoundError(_unavailable_message(name, cache_dir, error)) from None
    if not _holds_model(folder):
        raise FileNotFoundError(f"{name} on the Hugging Face Hub has no {CONFIG_FILE} with {WEIGHTS_FILE} or "
                                f"{PYTORCH_WEIGHTS_FILE}")
    return folder


def _unavailable_message(name: str, cache_dir: str | None, error: Exception) -> str:
    cache = cache_dir or huggingface_hub.constants.HF_HUB_CACHE
    if isinstance(error.__cause__, OfflineModeIsEnabled) or isinstance(error, OfflineModeIsEnabled):
        reason = "HF_HUB_OFFLINE is set"
    elif isinstance(error, HfHubHTTPError) and error.response is not None:
        reason = f"the Hub answered HTTP {error.response.status_code}"
    else:
        reason = "the Hub could not be reached: " + (str(error.__cause__ or error).splitlines() or ["?"])[0]
    return (f"{name} is not in the Hugging Face cache ({cache}) and was not downloaded ({reason}). With internet "
            f"access, run `{download_command(name)}` (the environment of scripts/setup_env.sh has `hf`) with the "
            "same HF_HOME or HF_HUB_CACHE, or copy a cache that holds it, or pass a model folder's path instead")


def download_command(name: str) -> str:
    """huggingface_hub's command line that puts `name` into the Hugging Face cache."""
    return f"hf download {name} {CONFIG_FILE} {VOCAB_FILE} {WEIGHTS_FILE}"


def read_config(folder: str) -> ElectraConfig:
    """The architecture in the folder's config.json (every key checked, see `read_folder_config`)."""
    return read_folder_config(folder)[0]


def read_qa_head_settings(folder: str) -> dict[str, Any] | None:
    """The QA head a fine-tuned folder holds (`joint_head`, `version_2_with_negative`,
    `beam_size` from its config.json), or None for a folder without one or without config.json
    (whose architecture then comes from elsewhere, e.g. run_tf_squad.py's --electra_model)."""
    if not os.path.isfile(os.path.join(folder, CONFIG_FILE)):
        return None
    return read_folder_config(folder)[1]


def read_folder_config(folder: str) -> tuple[ElectraConfig, dict[str, Any] | None]:
    """The folder's config.json, every key this code uses checked at once: the architecture
    and, for a fine-tuned QA folder, its head settings. Errors name the file and the key."""
    path = os.path.join(folder, CONFIG_FILE)
    content = read_json_file(path)
    config = ElectraConfig.from_dict(content, source=path)
    if "joint_head" not in content:
        return config, None
    settings = {key: content[key] for key in QA_HEAD_SETTINGS if key in content}
    for key, value in settings.items():
        requirement, accepts = QA_HEAD_SETTINGS[key]
        if not accepts(value):
            raise ModelFolderError(f"{path}: {key} must be {requirement}, got {value!r}")
    return config, settings


def read_classifier_labels(folder: str) -> tuple[bool, tuple[str, ...] | None]:
    """(whether the folder holds a sequence classifier, its class names in id order or None for a
    regression head), from config.json as transformers writes it (num_labels 1 means regression)."""
    path = os.path.join(folder, CONFIG_FILE)
    content = read_json_file(path)
    if CLASSIFIER_ARCHITECTURE not in (content.get("architectures") or []):
        return False, None
    id2label = content.get("id2label") or {}
    try:
        names = [id2label[key] for key in sorted(id2label, key=int)]
    except ValueError:
        raise ModelFolderError(f"{path}: id2label keys must be class ids (0, 1, ...)") from None
    num_labels = content.get("num_labels", len(names))
    if content.get("problem_type") == "regression" or num_labels == 1:
        return True, None
    if len(names) != num_labels or len(names) < 2:
        raise ModelFolderError(f"{path}: id2label names {len(names)} classes, num_labels says {num_labels}")
    return True, tuple(names)


def read_tensors(folder: str) -> dict[str, np.ndarray]:
    """The folder's tensors under canonical names, as float32 NumPy arrays; a file that cannot
    be read, or holds anything but real finite numbers, is one `ModelFolderError` naming it."""
    path = os.path.join(folder, WEIGHTS_FILE)
    if os.path.isfile(path):
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as error:
            raise ModelFolderError(f"{path}: not a readable safetensors file ({error})") from None
    elif os.path.isfile(os.path.join(folder, PYTORCH_WEIGHTS_FILE)):
        path = os.path.join(folder, PYTORCH_WEIGHTS_FILE)
        tensors = _read_pytorch_weights(path)
    else:
        raise FileNotFoundError(f"no {WEIGHTS_FILE} (or {PYTORCH_WEIGHTS_FILE}) in {folder}")
    return {canonical_name(name): _finite_float32(value, name, path) for name, value in tensors.items()}


def _finite_float32(value: np.ndarray, name: str, path: str) -> np.ndarray:
    """A tensor as the model holds it, float32, refused when that is not a faithful copy:
    complex or boolean values, or values that are NaN or infinite (a diverged run, a corrupt
    file) or beyond float32's range."""
    if value.dtype.kind in "cb":
        raise ModelFolderError(f"{path}: tensor {name} holds {value.dtype} values, expected real numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.asarray(value, dtype=np.float32)
    bad = converted.size - int(np.count_nonzero(np.isfinite(converted)))
    if bad:
        raise ModelFolderError(f"{path}: tensor {name} has {bad} of {converted.size} values that are NaN, "
                               "infinite or beyond float32's range: the run that wrote it diverged or the file "
                               "is corrupt")
    return converted


def _read_pytorch_weights(path: str) -> dict[str, np.ndarray]:
    """Released checkpoints older than safetensors; needs PyTorch, loads tensors only
    (`weights_only=True`: no code in the file runs). Anything but a dict of real tensors by
    name is one `ModelFolderError`."""
    try:
        import torch
    except ImportError:
        raise ModelFolderError(f"{path}: reading {PYTORCH_WEIGHTS_FILE} needs PyTorch; install it "
                               f"or convert the folder to {WEIGHTS_FILE}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- whatever the unpickler meets, the file is unreadable
        raise ModelFolderError(f"{path}: not a readable PyTorch weights file ({_torch_load_problem(error)}); "
                               f"it may be truncated or not a state dict: download it again or convert the "
                               f"folder to {WEIGHTS_FILE}") from None
    if not isinstance(state, dict):
        raise ModelFolderError(f"{path}: holds an object of type {type(state).__name__}, expected a dict of "
                               "tensors by name")
    tensors = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ModelFolderError(f"{path}: entry {name!r} holds an object of type {type(value).__name__}, "
                                   "expected a dict of tensors by name")
        if value.is_complex() or value.dtype == torch.bool:
            raise ModelFolderError(f"{path}: tensor {name} holds {value.dtype} values, expected real numbers")
        tensors[name] = value.float().numpy()
    return tensors


def _torch_load_problem(error: Exception) -> str:
    """The informative part of a torch.load error: the unpickler's own reason when there is one
    (not its advice to load without weights_only), else the first sentence."""
    message = str(error)
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    sentence = (reason.group(1) if reason else message).strip().split("\n")[0].split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__


def assign_tensors(model: keras.Model, tensors: Mapping[str, np.ndarray], source: str) -> LoadReport:
    """Copy tensors into a built model; one error lists every missing, unexpected or misshaped one."""
    params = hf_parameters(model)
    new_prefixes = new_head_prefixes(model)
    tensors = dict(tensors)
    _check_tied_generator_weight(model, tensors, source)
    report = LoadReport()
    problems: list[str] = []
    for name, param in params.items():
        if name not in tensors:
            if name.startswith(new_prefixes):
                report.newly_initialised.append(name)
            else:
                problems.append(f"missing {name} {tuple(param.variable.shape)}")
            continue
        value = tensors[name].T if param.transpose else tensors[name]
        if tuple(value.shape) != tuple(param.variable.shape):
            problems.append(f"wrong shape {name}: file {tuple(tensors[name].shape)}, model expects "
                            f"{tuple(param.variable.shape[::-1] if param.transpose else param.variable.shape)}")
    for name in sorted(set(tensors) - set(params)):
        if name.startswith(PRETRAINING_HEAD_PREFIXES) or name in IGNORED_BUFFERS:
            report.unused.append(name)
        else:
            problems.append(f"unexpected {name} {tuple(tensors[name].shape)}")
    if problems:
        raise ModelFolderError(f"{source} does not fit {type(model).__name__}:\n  " + "\n  ".join(problems))
    for name, param in params.items():
        if name in tensors:
            param.variable.assign(tensors[name].T if param.transpose else tensors[name])
    return report


def _check_tied_generator_weight(model: keras.Model, tensors: dict[str, np.ndarray], source: str) -> None:
    """A generator's output matrix is the word embedding matrix; a file may repeat it (drop it)
    but an untied one cannot be represented here."""
    if TIED_GENERATOR_WEIGHT not in tensors or not isinstance(model, ElectraGenerator):
        return
    tied = tensors.pop(TIED_GENERATOR_WEIGHT)
    embeddings = tensors.get(f"{ENCODER_PREFIX}embeddings.word_embeddings.weight")
    if embeddings is not None and not np.array_equal(tied, embeddings):
        raise ModelFolderError(f"{source}: {TIED_GENERATOR_WEIGHT} differs from the word "
                               "embeddings; only generators with tied output weights are supported")


def load_model_folder(name_or_path: str, model_class: Callable[..., keras.Model] = ElectraDiscriminator,
                      dtype: str | None = None, cache_dir: str | None = None) -> tuple[keras.Model, LoadReport]:
    """Build `model_class(config, dtype=dtype)` from a folder's config and load its weights;
    `model_class` may carry other arguments, e.g. `functools.partial(ElectraForQuestionAnswering,
    joint_head=False)`."""
    folder = resolve_model_folder(name_or_path, cache_dir)
    config = read_config(folder)
    tensors = read_tensors(folder)
    model = model_class(config, dtype=dtype)
    report = assign_tensors(model, tensors, source=folder)
    if report.newly_initialised:
        logger.info("Newly initialised (not in %s): %s", folder, ", ".join(report.newly_initialised))
    if report.unused:
        logger.info("Unused tensors of %s: %s", folder, ", ".join(report.unused))
    return model, report


def folder_tensors(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's tensors as its folder stores them: float32, under their Hugging Face names
    (a bare encoder's without the `electra.` prefix), linear weights transposed."""
    bare_encoder = isinstance(model, ElectraModel)
    tensors = {}
    for name, param in hf_parameters(model).items():
        value = np.asarray(param.variable.numpy(), dtype=np.float32)
        key = name[len(ENCODER_PREFIX):] if bare_encoder and name.startswith(ENCODER_PREFIX) else name
        tensors[key] = np.ascontiguousarray(value.T if param.transpose else value)
    return tensors


def check_finite_tensors(tensors: Mapping[str, np.ndarray], source: str) -> None:
    """A `ModelFolderError` naming `source` (where the weights come from) and the first tensor
    holding a NaN or an infinity: a diverged run's weights must not become a model folder, which
    every later program would load (and refuse) or, outside this project, use silently."""
    for name, value in tensors.items():
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            raise ModelFolderError(f"{source}: tensor {name} has {bad} of {value.size} values that are NaN or "
                                   "infinite: the run that trained it diverged; refusing to write a model folder of "
                                   "it (export an earlier checkpoint, or train again with a lower --learning_rate)")


def save_model_folder(model: keras.Model, folder: str, source: str | None = None) -> None:
    """Write `config.json` and `model.safetensors`; files appear complete or not at all, and
    not at all when a weight is not finite (`source` names the weights' origin in that error)."""
    tensors = folder_tensors(model)
    check_finite_tensors(tensors, source or f"the {type(model).__name__} to write to {folder}")
    os.makedirs(folder, exist_ok=True)
    if isinstance(model, ElectraForQuestionAnswering):
        architecture, extra = QA_ARCHITECTURES[model.joint_head], model.head_settings()
    elif isinstance(model, ElectraForSequenceClassification):
        architecture, extra = CLASSIFIER_ARCHITECTURE, model.head_settings()
    else:
        architecture, extra = ARCHITECTURES[type(model)], None
    weights_tmp = os.path.join(folder, WEIGHTS_FILE + ".tmp")
    config_tmp = os.path.join(folder, CONFIG_FILE + ".tmp")
    save_file(tensors, weights_tmp, metadata={"format": "pt"})
    model.config.save_json(config_tmp, architectures=[architecture], extra=extra)
    os.replace(weights_tmp, os.path.join(folder, WEIGHTS_FILE))
    os.replace(config_tmp, os.path.join(folder, CONFIG_FILE))

