#!/usr/bin/env bash
# Shared by every launcher (source it; it only defines functions and empty tables):
#   - -h/--help: the launcher's header comment, then its positional arguments and environment
#     variables with their defaults, printed before anything else runs;
#   - positional arguments and environment variables declared once, with their defaults;
#   - one set of spellings: precision amp | bf16 | tf32 | fp32, booleans true | false (also
#     yes | no and 1 | 0, plus a launcher's own pair such as xla | no_xla). Anything else stops
#     the launcher with one line naming the argument and the accepted values.
#
# A launcher declares, then parses:
#   source "$repo_dir/scripts/lib/args.sh"
#   electra_arg batch_size 16 "sequences per process"      # positional argument 1
#   electra_env ENGINE "" "horovod or tf_distribute"        # environment variable
#   electra_parse_args "$@"     # --help -> usage, exit 0; sets batch_size, ENGINE; extra
#                               # arguments in ELECTRA_EXTRA_ARGS (an error unless ELECTRA_ALLOW_EXTRA=1)
#   electra_precision precision; electra_bool xla xla no_xla
# A DEFAULT may use earlier arguments or repo_dir ("\$repo_dir/results/\$job_name"): it is
# expanded when the arguments are parsed and shown unexpanded (paths relative to the
# repository) by --help.

# The tables are made once per shell: scripts/setup_env.sh sources this file again inside a
# launcher, which must keep what the launcher declared and parsed.
if [[ -z "${ELECTRA_ARGS_SOURCED:-}" ]]; then
  ELECTRA_ARGS_SOURCED=1
  ELECTRA_ARG_NAMES=() ELECTRA_ARG_DEFAULTS=() ELECTRA_ARG_HELP=()
  ELECTRA_ENV_NAMES=() ELECTRA_ENV_DEFAULTS=() ELECTRA_ENV_HELP=()
  ELECTRA_EXTRA_ARGS=()
  ELECTRA_PRECISION_FLAGS=()
fi

# electra_die MESSAGE: one line on standard error, exit status 2 (a usage error).
electra_die() {
  echo "error: $*" >&2
  exit 2
}

electra_arg() { ELECTRA_ARG_NAMES+=("$1") ELECTRA_ARG_DEFAULTS+=("$2") ELECTRA_ARG_HELP+=("$3"); }
electra_env() { ELECTRA_ENV_NAMES+=("$1") ELECTRA_ENV_DEFAULTS+=("$2") ELECTRA_ENV_HELP+=("$3"); }

# electra_help_requested ARGS...: whether -h or --help is among the arguments.
electra_help_requested() {
  local arg
  for arg in "$@"; do
    if [[ "$arg" == -h || "$arg" == --help ]]; then return 0; fi
  done
  return 1
}

# electra_shown_default TEXT: a default as --help shows it (repository paths made relative).
electra_shown_default() {
  local text=${1//\$repo_dir\//}
  text=${text//\$\{repo_dir\}\//}
  if [[ -z "$text" ]]; then text='""'; fi
  printf '%s' "$text"
}

# electra_usage [SCRIPT]: the header comment of SCRIPT (default: the launcher being run), from
# its second line to the first line that is not a comment, then the declared tables.
electra_usage() {
  local script=${1:-${BASH_SOURCE[-1]}} i
  sed -n '2,/^[^#]/{ /^#SBATCH/d; /^# shellcheck/d; /^#/!d; s/^# \{0,1\}//; p; }' "$script"
  if (( ${#ELECTRA_ARG_NAMES[@]} )); then
    echo
    echo "Positional arguments, in this order (a missing or empty one takes its default):"
    for i in "${!ELECTRA_ARG_NAMES[@]}"; do
      printf '  %2d %-22s default %s\n      %s\n' "$((i + 1))" "${ELECTRA_ARG_NAMES[$i]}" \
        "$(electra_shown_default "${ELECTRA_ARG_DEFAULTS[$i]}")" "${ELECTRA_ARG_HELP[$i]}"
    done
  fi
  if (( ${#ELECTRA_ENV_NAMES[@]} )); then
    echo
    echo "Environment variables (unset or empty: the default):"
    for i in "${!ELECTRA_ENV_NAMES[@]}"; do
      printf '  %-22s default %s\n      %s\n' "${ELECTRA_ENV_NAMES[$i]}" \
        "$(electra_shown_default "${ELECTRA_ENV_DEFAULTS[$i]}")" "${ELECTRA_ENV_HELP[$i]}"
    done
  fi
  if (( ${#ELECTRA_ARG_NAMES[@]} + ${#ELECTRA_ENV_NAMES[@]} )); then
    echo
    echo "Paths are relative to the repository unless absolute. Spellings: precision amp, bf16, tf32"
    echo "or fp32; booleans true/false, yes/no or 1/0."
  fi
}

# electra_help_if_asked ARGS...: print the usage and exit 0 when -h/--help is among ARGS.
electra_help_if_asked() {
  if electra_help_requested "$@"; then
    electra_usage "${BASH_SOURCE[-1]}"
    exit 0
  fi
}

# _electra_assign NAME VALUE DEFAULT: NAME=VALUE, or the expanded DEFAULT when VALUE is empty.
_electra_assign() {
  local name=$1 value=$2 default=$3
  if [[ -z "$value" ]]; then eval "value=\"$default\""; fi
  printf -v "$name" '%s' "$value"
}

# electra_parse_args ARGS...: --help, then the declared positional arguments and environment
# variables; the arguments after the declared ones go to ELECTRA_EXTRA_ARGS.
electra_parse_args() {
  electra_help_if_asked "$@"
  local i count=${#ELECTRA_ARG_NAMES[@]} name given=("$@")
  if (( $# > count )) && [[ "${ELECTRA_ALLOW_EXTRA:-0}" != 1 ]]; then
    electra_die "$(basename "${BASH_SOURCE[-1]}") takes at most $count arguments, got $# (see --help)"
  fi
  for i in "${!ELECTRA_ENV_NAMES[@]}"; do
    name=${ELECTRA_ENV_NAMES[$i]}
    _electra_assign "$name" "${!name:-}" "${ELECTRA_ENV_DEFAULTS[$i]}"
  done
  for ((i = 0; i < count; i++)); do
    _electra_assign "${ELECTRA_ARG_NAMES[$i]}" "${given[$i]:-}" "${ELECTRA_ARG_DEFAULTS[$i]}"
  done
  ELECTRA_EXTRA_ARGS=("${@:count+1}")
}

# electra_precision VARIABLE: the variable's value must be amp, bf16, tf32 or fp32 (any case);
# it is lower-cased in place.
electra_precision() {
  local value=${!1,,}
  case "$value" in
    amp|bf16|tf32|fp32) printf -v "$1" '%s' "$value" ;;
    *) electra_die "$1 must be amp, bf16, tf32 or fp32, not '${!1}'" ;;
  esac
}

# electra_bool VARIABLE [TRUE_WORD FALSE_WORD]: the variable's value becomes true or false;
# accepted: true/false, yes/no, 1/0 (any case) and the launcher's own pair, e.g. xla no_xla.
electra_bool() {
  local value=${!1,,} true_word=${2:-true} false_word=${3:-false} accepted="true/false, yes/no or 1/0"
  if [[ -n "${2:-}" ]]; then accepted="$2/$3, $accepted"; fi
  case "$value" in
    true|yes|1|"$true_word") printf -v "$1" true ;;
    false|no|0|"$false_word") printf -v "$1" false ;;
    *) electra_die "$1 must be $accepted, not '${!1}'" ;;
  esac
}

# electra_set_precision_flags PRECISION XLA: ELECTRA_PRECISION_FLAGS for run_pretraining.py and
# run_tf_squad.py. fp32 also turns TF32 off on Ampere and newer GPUs (NVIDIA_TF32_OVERRIDE=0),
# where TensorFlow otherwise uses it for float32 matrix products; tf32 leaves it on.
electra_set_precision_flags() {
  case "$1" in
    amp) ELECTRA_PRECISION_FLAGS=(--amp --amp_dtype float16) ;;
    bf16) ELECTRA_PRECISION_FLAGS=(--amp --amp_dtype bfloat16) ;;
    tf32) ELECTRA_PRECISION_FLAGS=(--no-amp) ;;
    fp32) ELECTRA_PRECISION_FLAGS=(--no-amp); export NVIDIA_TF32_OVERRIDE=0 ;;
    *) electra_die "precision must be amp, bf16, tf32 or fp32, not '$1'" ;;
  esac
  if [[ "$2" == true ]]; then ELECTRA_PRECISION_FLAGS+=(--xla); else ELECTRA_PRECISION_FLAGS+=(--no-xla); fi
}
