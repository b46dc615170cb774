#!/usr/bin/env bash
# The small-scale LeDex experiment (conf/experiment/small/, README "Results"), stage by stage in
# order, then `publish` copies each finished stage's metrics.json and resolved config.yaml into
# results/small/ (no samples, no weights) and writes the report there. Every stage resumes where it stopped, so after a kill just run this again: finished stages
# return at once. Each stage's wall time and peak memory go to outputs/small/stages.tsv.
#   nohup scripts/small_experiment.sh > outputs/small.log 2>&1 &
#   STAGES="collect eval_prompt" scripts/small_experiment.sh     # some stages only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STAGES=${STAGES:-"collect eval_prompt train_sft eval_sft train_ppo eval_rl publish"}
mkdir -p outputs/small
run() {  # run NAME CMD...: time a stage; the record is appended when it ends successfully
  local name=$1; shift
  echo "== $(date -u +%FT%TZ) $name: $*"
  /usr/bin/time -f "%e\t%M" -o outputs/small/.time "$@"
  printf "%s\t%s\t%s\n" "$name" "$(date -u +%FT%TZ)" "$(cat outputs/small/.time)" >> outputs/small/stages.tsv
}
for stage in $STAGES; do
  case $stage in
    collect)     run collect     "$PY" collect.py experiment=small/prompt ;;
    eval_prompt) run eval_prompt "$PY" evaluate.py experiment=small/prompt ;;
    train_sft)   run train_sft   "$PY" train.py algorithm=sft experiment=small/prompt ;;
    eval_sft)    run eval_sft    "$PY" evaluate.py experiment=small/sft ;;
    train_ppo)   run train_ppo   "$PY" train.py algorithm=ppo experiment=small/prompt ;;
    eval_rl)     run eval_rl     "$PY" evaluate.py experiment=small/rl ;;
    publish)  # what results/small holds: every finished stage's metrics.json + resolved config, the report
      for dir in outputs/small/*/; do
        name=$(basename "$dir")
        [ -f "$dir/metrics.json" ] || continue
        mkdir -p "results/small/$name"
        cp "$dir/metrics.json" "$dir/config.yaml" "results/small/$name/"
      done
      # stage records of earlier sessions stay; a stage run again keeps its latest record
      { cat results/small/stages.tsv 2>/dev/null || true; cat outputs/small/stages.tsv; } \
        | awk -F'\t' '!($1 in r) {order[n++] = $1} {r[$1] = $0} END {for (i = 0; i < n; i++) print r[order[i]]}' \
        > results/small/.stages.tsv && mv results/small/.stages.tsv results/small/stages.tsv
      "$PY" -m selfdebug.report results/small --out results/small/report > /dev/null ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
