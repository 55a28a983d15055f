# The container engine for scripts/docker/*.sh (sourced by them, not run).
# Environment:
#   CONTAINER_ENGINE        docker or podman (a command name or path). Default: docker when its
#                           daemon answers, else podman, else docker (which then says why not).
#   CONTAINER_ENGINE_FLAGS  flags put before the engine's subcommand, split on spaces, e.g.
#                           "--runtime runc" for a podman whose default runtime (crun) fails.
# choose_container_engine sets `engine` (the command and those flags, an array) and `engine_kind`
# (docker or podman: Podman's own `docker` shim counts as podman).

choose_container_engine() {
  local name="${CONTAINER_ENGINE:-}" version flags
  if [[ -z "$name" ]]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      name=docker
    elif command -v podman >/dev/null 2>&1; then
      name=podman
    elif command -v docker >/dev/null 2>&1; then
      name=docker
    else
      echo "error: neither docker nor podman is installed; install one (docs/container.md) or set CONTAINER_ENGINE" >&2
      return 1
    fi
  fi
  if ! version="$("$name" --version 2>/dev/null)"; then
    echo "error: CONTAINER_ENGINE '$name' cannot be run; set it to docker or podman" >&2
    return 1
  fi
  case "$version" in
    *[Pp]odman*) engine_kind=podman ;;
    *Docker*) engine_kind=docker ;;
    *) echo "error: CONTAINER_ENGINE '$name' is neither Docker nor Podman ($version)" >&2; return 1 ;;
  esac
  read -r -a flags <<< "${CONTAINER_ENGINE_FLAGS:-}"
  engine=("$name" "${flags[@]}")
}
