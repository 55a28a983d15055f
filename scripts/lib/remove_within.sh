# Sourced by the launchers: removal that stays inside the folder a script owns.
#
# remove_within ROOT PATH...
#   rm -rf each PATH, which must lie strictly inside the folder ROOT once `..` and the symbolic
#   links of its parent folders are resolved (a PATH that is itself a link is removed as a link,
#   never followed). Every PATH is checked before any is removed; one that is outside ROOT, is
#   ROOT itself or has no name (., .., trailing /) is refused with one line on standard error and
#   status 1. Quote every argument: the function sees paths, never words split from them.

remove_within() {
  local root resolved_root path target
  local -a targets=()
  root=$1; shift
  if ! resolved_root="$(realpath -e -- "$root" 2>/dev/null)" || [[ ! -d "$resolved_root" || "$resolved_root" == / ]]; then
    echo "error: refusing to remove anything in '$root': it is not an existing folder other than /" >&2
    return 1
  fi
  for path in "$@"; do
    case "${path##*/}" in
      ""|.|..) echo "error: refusing to remove '$path': not a file or folder name" >&2; return 1 ;;
    esac
    target="$(realpath -m -- "$(dirname -- "$path")")/${path##*/}"
    if [[ "$target" != "${resolved_root%/}/"* ]]; then
      echo "error: refusing to remove '$path': it is not inside '$root'" >&2
      return 1
    fi
    targets+=("$target")
  done
  for target in "${targets[@]}"; do rm -rf -- "$target"; done
}
