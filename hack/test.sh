#!/usr/bin/env bash
# The test command: sanity, lint, unit, integration (or only the stages named).
# Every stage runs; the command fails at the end if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD
export PATH="$root/.venv/bin:$PATH"
# kubernetes.core (hack/bootstrap.sh unpacks it beside): ansible-lint checks restore.yml's task against its argument spec.
export ANSIBLE_COLLECTIONS_PATH="$root/.build/collections:$root/.build/collections-extra"
staged=.build/collections/ansible_collections/vmimage/replication
if [ "$#" -gt 0 ]; then stages=("$@"); else stages=(sanity lint unit integration); fi
# pytest-xdist workers. Unit tests mostly wait, so more workers than cores pay. Integration tests run real peers and
# timed scenarios (kills, cancels, polls) and are mostly CPU-bound on Ansible: on 2 cores, 4 workers ran slower than 2
# (28 % of the suite after 17 min vs 24 % after 11); 3 use the cores while some tests wait (kills, abandon timers):
# 1515 s against 1561 s for the whole stage, with other work on the machine during the 3-worker run.
# loadgroup keeps tests marked xdist_group(name) on one worker (module-scoped peers that hold fixed resources).
unit_workers=${VMI_UNIT_WORKERS:-4}
integration_workers=${VMI_INTEGRATION_WORKERS:-3}
# Sanity and lint read the staged copy: stage the working tree as it is now.
bash hack/stage-collection.sh || exit 2

run_stage() {
  case "$1" in
    sanity)
      (cd "$staged" && "$root/.build/venv-sanity/bin/ansible-test" sanity --local --requirements --python 3.11 --color no)
      ;;
    lint)
      (cd "$staged" && ansible-lint --profile production --offline --nocolor)
      ;;
    unit)
      python -m pytest -q -p no:cacheprovider -n "$unit_workers" --dist loadgroup tests/unit
      ;;
    integration)
      python -m pytest -q -p no:cacheprovider -n "$integration_workers" --dist loadgroup --durations=30 tests/integration
      ;;
    *) echo "unknown stage $1" >&2; return 2 ;;
  esac
}

timed_stage() {
  echo "=== $1"
  local start=$SECONDS rc=0
  run_stage "$1" || rc=$?
  echo "=== $1 took $((SECONDS - start)) s"
  return "$rc"
}

has_stage() {
  local stage
  for stage in "${stages[@]}"; do [ "$stage" = "$1" ] && return 0; done
  return 1
}

# Wait for the static checks started beside unit; show their output; note the ones that failed.
collect_static() {
  [ "${#static_pids[@]}" -gt 0 ] || return 0
  wait "${static_pids[@]}"
  static_pids=()
  local stage
  for stage in "${static[@]}"; do
    cat "$static_tmp/$stage.log"
    [ "$(cat "$static_tmp/$stage.rc" 2>/dev/null)" = 0 ] || failed+=("$stage")
  done
}

# An interrupted run (Ctrl-C, a CI timeout) takes the static checks with it: each runs in a process group of its own.
stop_static() {
  local group
  for group in "${static_pids[@]}"; do kill -TERM -- "-$group" 2>/dev/null; done
}
static_pids=()
trap 'stop_static; exit 130' INT TERM

failed=()
# The static checks run beside the unit tests (which mostly wait), each at once (lint is short, sanity the long pole:
# 284 s against unit's 224 s on a fresh clone, lint 28 s after it), each in a temporary directory of its own; their
# output is shown once they end, in stage order.
static=()
if has_stage unit; then
  for stage in sanity lint; do has_stage "$stage" && static+=("$stage"); done
fi
if [ "${#static[@]}" -gt 0 ]; then
  static_tmp="$root/.build/tmp-static"
  rm -rf "$static_tmp" && mkdir -p "$static_tmp"
  set -m
  for stage in "${static[@]}"; do
    (
      export TMPDIR="$static_tmp/$stage"
      mkdir -p "$TMPDIR"
      timed_stage "$stage" > "$static_tmp/$stage.log" 2>&1
      echo $? > "$static_tmp/$stage.rc"
    ) &
    static_pids+=($!)
  done
  set +m
  echo "=== ${static[*]} run beside unit (output below once they end)"
fi
for stage in "${stages[@]}"; do
  case " ${static[*]} " in *" $stage "*) continue ;; esac
  # Integration tests need both cores: the static checks end first.
  [ "$stage" = integration ] && collect_static
  timed_stage "$stage" || failed+=("$stage")
done
collect_static
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED stages: ${failed[*]}"
  exit 1
fi
echo "all stages passed: ${stages[*]}"
