#!/usr/bin/env bash
# GLUE fine-tuning presets: each function takes a task name and prints the first 12 positional
# arguments of scripts/run_glue.sh:
#   task_name electra_model epochs batch_size infer_batch_size learning_rate precision num_gpu seed
#   glue_dir results_dir init_checkpoint
# Usage: bash scripts/run_glue.sh $(source scripts/configs/glue_config.sh && dgxa100_1gpu_amp rte) [mode ...]
# Google ELECTRA's GLUE settings: batch 32, learning rate 1e-4 (base; 3e-4 small, 5e-5 large),
# 3 epochs (10 for RTE and STS-B, whose training sets are small), sequence length 128. The global
# batch stays 32 on several GPUs (batch_size is per GPU), so the learning rate is unchanged.

glue_epochs ()
{
    case "${1,,}" in
        rte|sts-b|stsb) echo 10 ;;
        *) echo 3 ;;
    esac
}

glue_preset ()
{
    local task=$1 electra_model=$2 batch_size=$3 learning_rate=$4 precision=$5 num_gpu=$6
    echo "$task" "$electra_model" "$(glue_epochs "$task")" "$batch_size" 256 "$learning_rate" "$precision" \
         "$num_gpu" 1 default "results/glue_$task" None
}

# NVIDIA DGX A100 (8x A100 80GB)
dgxa100_1gpu_amp () { glue_preset "${1:?task name}" google/electra-base-discriminator 32 1e-4 amp 1; }
dgxa100_1gpu_tf32 () { glue_preset "${1:?task name}" google/electra-base-discriminator 32 1e-4 tf32 1; }
dgxa100_8gpu_amp () { glue_preset "${1:?task name}" google/electra-base-discriminator 4 1e-4 amp 8; }

# NVIDIA DGX-1 (8x V100 16GB)
dgx1_1gpu_amp () { glue_preset "${1:?task name}" google/electra-base-discriminator 32 1e-4 amp 1; }
dgx1_8gpu_amp () { glue_preset "${1:?task name}" google/electra-base-discriminator 4 1e-4 amp 8; }

# A CPU: the small discriminator in float32, no XLA (slow to compile on a CPU).
cpu () { glue_preset "${1:?task name}" google/electra-small-discriminator 32 3e-4 fp32 1; }
