#!/usr/bin/env bash
# Pretraining presets: each function prints the first 20 positional arguments of
# scripts/run_pretraining.sh, e.g.
#   bash scripts/run_pretraining.sh $(source scripts/configs/pretrain_config.sh && dgxa100_8gpu_amp) <data_p1> <data_p2> <results>
# Order: batch_p1 lr_p1 precision num_gpus xla warmup_p1 steps_p1 save_steps resume optimizer
#        accumulate accum_p1 seed job_name batch_p2 lr_p2 warmup_p2 steps_p2 accum_p2 model_size
# The GPU presets are NVIDIA's published ones (global batch 67,584 in phase 1, 27,648 in phase 2).

_pretrain_preset() {
  # batch_p1 precision num_gpus accum_p1 batch_p2 accum_p2 [xla] [model] [steps_p1 warmup_p1 steps_p2 warmup_p2 lr_p1 lr_p2]
  local batch_p1=$1 precision=$2 num_gpus=$3 accum_p1=$4 batch_p2=$5 accum_p2=$6
  local xla=${7:-xla} model=${8:-base}
  local steps_p1=${9:-10000} warmup_p1=${10:-2000} steps_p2=${11:-930} warmup_p2=${12:-200}
  local lr_p1=${13:-6e-3} lr_p2=${14:-4e-3}
  echo "$batch_p1 $lr_p1 $precision $num_gpus $xla $warmup_p1 $steps_p1 500 false lamb true $accum_p1 42" \
       "electra_lamb_pretraining $batch_p2 $lr_p2 $warmup_p2 $steps_p2 $accum_p2 $model"
}

# NVIDIA DGX A100 (8x A100 40GB)
dgxa100_8gpu_amp()  { _pretrain_preset 176 amp  8 48  24 144; }
dgxa100_8gpu_tf32() { _pretrain_preset  88 tf32 8 96  12 288; }
# NVIDIA DGX-2H (16x V100 32GB)
dgx2_16gpu_amp()    { _pretrain_preset 176 amp  16 24 24 72; }
dgx2_16gpu_fp32()   { _pretrain_preset  88 fp32 16 48 12 144; }
# NVIDIA DGX-1 (8x V100 16GB)
dgx1_8gpu_amp()     { _pretrain_preset  88 amp  8 96  12 288; }
dgx1_8gpu_fp32()    { _pretrain_preset  40 fp32 8 211  6 576; }
# One CPU machine: ELECTRA-small, bfloat16, no XLA (slower than graph mode on CPU, see README),
# global batch 128 (32 x 4) in phase 1 and 32 (8 x 4) in phase 2; days of compute for real data.
cpu()               { _pretrain_preset  32 bf16 1 4    8 4 no_xla small 20000 2000 2000 200 2e-3 1e-3; }
