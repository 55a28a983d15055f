"""run_tf_squad.py fine-tunes in mixed precision (float16 with dynamic loss scaling, bfloat16) and
under XLA on a CPU: finite losses that fall, predictions written, and the first step as float32's."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import run_tf_squad
from test_run_squad import FEATURE_FLAGS
from test_squad_distributed import discriminator, squad_dir  # noqa: F401 (module fixtures)

MODES = {"float32": [], "float16": ["--amp", "--amp_dtype", "float16"], "bfloat16": ["--amp", "--amp_dtype", "bfloat16"],
         "xla": ["--xla"], "float16_xla": ["--amp", "--amp_dtype", "float16", "--xla"]}
STEPS = 12
# Relative agreement of the first step's loss and gradient norm with float32's: the 8-bit
# mantissa of bfloat16 is the coarsest; XLA only reorders float32 arithmetic. (Measured here:
# float16 2e-5, bfloat16 4e-4, XLA 1e-7.)
TOLERANCE = {"float16": 1e-3, "bfloat16": 1e-2, "xla": 1e-5, "float16_xla": 1e-3}


@pytest.fixture(scope="module")
def runs(squad_dir: Path, discriminator: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each mode's output folder after STEPS steps from the same dropout-free initial weights."""
    cache = tmp_path_factory.mktemp("features")
    outputs = {}
    for mode, flags in MODES.items():
        outputs[mode] = tmp_path_factory.mktemp(mode)
        assert run_tf_squad.main([
            "--init_checkpoint", str(discriminator), "--data_dir", str(squad_dir), "--output_dir", str(outputs[mode]),
            "--cache_dir", str(cache), "--do_train", "--do_predict", "--train_batch_size", "8",
            "--max_steps", str(STEPS), "--learning_rate", "3e-3", "--layerwise_lr_decay", "1.0", "--log_freq", "1",
            "--seed", "3", *FEATURE_FLAGS, *flags]) == 0, mode
    return outputs


def step_records(output: Path) -> list[dict]:
    """The per-step log lines (the summary line, written last, left out)."""
    return [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()][:STEPS]


@pytest.mark.parametrize("mode", MODES)
def test_mode_fine_tunes_with_finite_falling_losses_and_predicts(mode: str, runs: dict[str, Path],
                                                               squad_dir: Path):
    records = step_records(runs[mode])
    losses = [r["total_loss"] for r in records]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(math.isfinite(v) for r in records for v in r.values()), records
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    print(f"{mode}: loss {first:.3f} over the first 3 steps, {last:.3f} over the last 3")
    assert last < first - 0.3
    assert records[-1]["skipped_steps"] == 0
    assert (records[-1]["loss_scale"] > 1.0) == mode.startswith("float16")  # dynamic loss scaling for float16 only
    questions = {q["id"] for p in json.loads((squad_dir / "dev-v1.1.json").read_text())["data"][0]["paragraphs"]
                 for q in p["qas"]}
    assert set(json.loads((runs[mode] / "predictions.json").read_text())) == questions


@pytest.mark.parametrize("mode", list(TOLERANCE))
def test_first_step_agrees_with_float32(mode: str, runs: dict[str, Path]):
    """Step 1's loss is the initial weights' on the first batch (the same batch in every mode)."""
    reference, record = step_records(runs["float32"])[0], step_records(runs[mode])[0]
    for name in ("total_loss", "gradient_norm"):
        relative = abs(record[name] - reference[name]) / abs(reference[name])
        print(f"{mode}: {name} {record[name]:.6f} against float32's {reference[name]:.6f} (relative {relative:.1e})")
        assert relative < TOLERANCE[mode], name
