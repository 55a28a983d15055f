"""Turn a pretraining checkpoint into Hugging Face model folders: OUTPUT_DIR/discriminator
(ElectraForPreTraining, the one to fine-tune) and OUTPUT_DIR/generator (ElectraForMaskedLM).
A masked-LM-only run (run_pretraining.py --objective masked_lm) gives OUTPUT_DIR/generator alone,
the model to fine-tune then.

The architecture comes from the run's `run_config.json` (RESULTS_DIR/run_config.json for a
checkpoint RESULTS_DIR/checkpoints/ckpt-N), so any model size works. Only the model is read
from the checkpoint (not the optimizer), every model variable must be found in it, and every
weight must be finite (a diverged run's checkpoint is refused, nothing is written).

A checkpoints folder gives its newest checkpoint that reads fully, with a warning naming each
newer one passed over; a checkpoint that does not read fully is one error line naming its bad
file. The checkpoints are only read, never moved or changed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from configuration import ElectraConfig, PretrainingObjective  # noqa: E402
from model_folder import check_finite_tensors, folder_tensors, save_model_folder  # noqa: E402
from modeling import ElectraPretrainingModel  # noqa: E402
from run_utils import RUN_CONFIG_FILE  # noqa: E402
from safe_io import check_output_dir, writable_output_dir  # noqa: E402
from training import resolve_checkpoint  # noqa: E402

logger = logging.getLogger("postprocess_pretrained_ckpt")
PARTS = ("discriminator", "generator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pretrained_checkpoint", required=True,
                        help="a checkpoint (RESULTS_DIR/checkpoints/ckpt-N) or a checkpoints folder (its newest "
                             "checkpoint that reads fully)")
    parser.add_argument("--output_dir", required=True, help="discriminator/ and generator/ are written here")
    parser.add_argument("--vocab_file", default=None, help="vocab.txt to copy into both folders")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="accepted for the recipe's command lines; weights are float32 either way")
    return parser


def read_run_config(checkpoint: str) -> dict:
    """The run_config.json of the run that wrote `checkpoint` (two folders up)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: expected the run_config.json that run_pretraining.py writes to "
                                f"its --results_dir, two folders above the checkpoint {checkpoint}")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    missing = [part for part in ("discriminator", "generator") if part not in content]
    if missing:
        raise ValueError(f"{path} lacks the {' and '.join(missing)} configuration")
    return content


def restore_pretraining_model(checkpoint: str) -> ElectraPretrainingModel:
    """The generator + discriminator of the run, with the checkpoint's weights (float32)."""
    run_config = read_run_config(checkpoint)
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), RUN_CONFIG_FILE)
    model = ElectraPretrainingModel(ElectraConfig.from_dict(run_config["discriminator"], source),
                                    ElectraConfig.from_dict(run_config["generator"], source),
                                    PretrainingObjective(**run_config.get("objective", {})))
    status = tf.train.Checkpoint(model=model).read(checkpoint).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        unmatched = re.findall(r"path=([^,]+),", str(error))
        raise ValueError(f"{checkpoint} does not hold every weight of the model described by {source}: "
                         f"{', '.join(unmatched[:5]) or error} ... were not found. It was written by another "
                         "model, or by a version of this code whose checkpoints left the encoder layers out of "
                         "the model") from None
    return model


def weights_source(checkpoint: str, part: str) -> str:
    return f"{checkpoint} ({part})"


def trained_parts(model: ElectraPretrainingModel) -> tuple[str, ...]:
    """Both halves, or the generator alone after a masked_lm run (its discriminator was never trained)."""
    return PARTS if model.objective.detects_replaced_tokens else ("generator",)


def postprocess(checkpoint: str, output_dir: str, vocab_file: str | None) -> dict[str, str]:
    """Write the trained model folders; returns {"discriminator": folder, "generator": folder}
    (the generator's alone after a masked_lm run)."""
    model = restore_pretraining_model(checkpoint)
    parts = trained_parts(model)
    for part in parts:  # all checked before any is written
        check_finite_tensors(folder_tensors(getattr(model, part)), weights_source(checkpoint, part))
    writable_output_dir(output_dir, "--output_dir")  # after the checks: a failed export leaves no folder
    if len(parts) < len(PARTS):
        logger.info("%s comes from a masked-LM-only run (objective masked_lm): only its generator was trained, "
                    "fine-tune %s", checkpoint, os.path.join(output_dir, "generator"))
    folders = {}
    for part in parts:
        folder = os.path.join(output_dir, part)
        save_model_folder(getattr(model, part), folder, source=weights_source(checkpoint, part))
        if vocab_file:
            shutil.copyfile(vocab_file, os.path.join(folder, "vocab.txt"))
        folders[part] = folder
        logger.info("Wrote the %s of %s to %s", part, checkpoint, folder)
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.vocab_file and not os.path.isfile(args.vocab_file):
            raise FileNotFoundError(f"vocab file not found: {args.vocab_file}")
        check_output_dir(args.output_dir, "--output_dir")  # created only once the checkpoint has passed
        checkpoint = resolve_checkpoint(args.pretrained_checkpoint, args.pretrained_checkpoint)
        postprocess(checkpoint, args.output_dir, args.vocab_file)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
