# Shared by the bench/gpu_*.sh scripts (sourced, not run). They set PYTHON and define fail() before sourcing.

# Install every wheel in $WHEELS (when set) without reaching an index: the GPU machine has no registry.
install_wheels() {
  [[ -n "${WHEELS:-}" ]] || return 0
  [[ -d "$WHEELS" ]] || fail "WHEELS=$WHEELS is not a folder"
  shopt -s nullglob
  local wheels=("$WHEELS"/*.whl)
  ((${#wheels[@]})) || fail "WHEELS=$WHEELS holds no .whl files"
  echo "installing ${#wheels[@]} wheels from $WHEELS (no index)"
  PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" "${wheels[@]}" \
    || fail "pip could not install the wheels in $WHEELS"
}

# run_bench NAME SCRIPT ARGS...: run `$PYTHON -u SCRIPT ARGS...` under LIMIT_S seconds, its output teed to $log;
# a clear failure when it runs past the limit or exits non-zero.
run_bench() {
  local name=$1 status=0
  shift
  timeout --signal=TERM --kill-after=15 "$LIMIT_S" "$PYTHON" -u "$@" 2>&1 | tee "$log" || status=$?
  if ((status == 124)); then
    fail "$name ran past LIMIT_S=$LIMIT_S s and was stopped"
  elif ((status != 0)); then
    fail "$name exited with status $status (see the output above${OUT:+ and $log})"
  fi
}

# bench_outputs JSON_NAME LOG_NAME: set json and log to $OUT/JSON_NAME and $OUT/LOG_NAME when OUT is set, else
# to bench/results/JSON_NAME and /dev/null.
bench_outputs() {
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    json="$OUT/$1"
    log="$OUT/$2"
  else
    json="$ROOT/bench/results/$1"
    log=/dev/null
  fi
}
