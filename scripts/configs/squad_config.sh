#!/usr/bin/env bash
# SQuAD fine-tuning presets of NVIDIA's recipe, plus one for this CPU. Each function prints the
# first 12 positional arguments of scripts/run_squad.sh:
#   electra_model epochs batch_size infer_batch_size learning_rate precision num_gpu seed
#   squad_version squad_dir results_dir init_checkpoint
# Usage: bash scripts/run_squad.sh $(source scripts/configs/squad_config.sh && dgxa100_8gpu_amp) [mode ...]
# Learning rates are the recipe's per-GPU-count values (batch_size is per GPU).

squad_preset ()
{
    local electra_model=$1 epochs=$2 batch_size=$3 infer_batch_size=$4 learning_rate=$5 precision=$6 \
          num_gpu=$7 squad_version=${8:-1.1}
    echo "$electra_model" "$epochs" "$batch_size" "$infer_batch_size" "$learning_rate" "$precision" \
         "$num_gpu" 1 "$squad_version" "data/download/squad/v$squad_version" results/ None
}

# NVIDIA DGX A100 (8x A100 80GB)
dgxa100_8gpu_amp () { squad_preset google/electra-base-discriminator 2 32 512 8e-4 amp 8; }
dgxa100_8gpu_tf32 () { squad_preset google/electra-base-discriminator 2 32 512 8e-4 tf32 8; }
dgxa100_1gpu_amp () { squad_preset google/electra-base-discriminator 2 32 512 2e-4 amp 1; }
dgxa100_1gpu_tf32 () { squad_preset google/electra-base-discriminator 2 32 512 2e-4 tf32 1; }

# NVIDIA DGX-2H (16x V100 32GB)
dgx2_16gpu_amp () { squad_preset google/electra-base-discriminator 2 32 256 1e-3 amp 16; }
dgx2_16gpu_fp32 () { squad_preset google/electra-base-discriminator 2 32 256 1e-3 fp32 16; }
dgx2_1gpu_amp () { squad_preset google/electra-base-discriminator 2 32 256 2e-4 amp 1; }
dgx2_1gpu_fp32 () { squad_preset google/electra-base-discriminator 2 32 256 2e-4 fp32 1; }

# NVIDIA DGX-1 (8x V100 16GB)
dgx1_8gpu_amp () { squad_preset google/electra-base-discriminator 2 16 256 4e-4 amp 8; }
dgx1_8gpu_fp32 () { squad_preset google/electra-base-discriminator 2 8 256 3e-4 fp32 8; }
dgx1_8gpu_amp_v2 () { squad_preset google/electra-base-discriminator 3 16 256 4e-4 amp 8 2.0; }
dgx1_1gpu_amp () { squad_preset google/electra-base-discriminator 2 16 256 1e-4 amp 1; }
dgx1_1gpu_fp32 () { squad_preset google/electra-base-discriminator 2 8 256 1e-4 fp32 1; }

# A CPU: the small discriminator in float32, no XLA (slow to compile on a CPU); Google ELECTRA's
# small-model learning rate 3e-4.
cpu () { squad_preset google/electra-small-discriminator 2 16 64 3e-4 fp32 1; }
