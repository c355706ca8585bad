#!/bin/bash
# Every canary and both controls on seeds 100-104, the plans of this commit.
BIN=${1:-target/debug/capshop}   # the binary `cargo test -p capshop --test torture --no-run` builds (it carries the canaries)
OUT=${2:-runs/canaries}; rm -rf $OUT; mkdir -p $OUT
run() { # name mode
  local name=$1 mode=$2 dir=$OUT/$1-$2
  mkdir -p $dir
  if [ "$name" = control ]; then env -u CAPSHOP_CANARY $BIN torture --json --seed 100 --schedules 5 --seconds 10 --settle-seconds 30 --inventory-mode $mode --out $dir > $dir/report.json 2> $dir/stderr
  else CAPSHOP_CANARY=$name $BIN torture --json --seed 100 --schedules 5 --seconds 10 --settle-seconds 30 --inventory-mode $mode --out $dir > $dir/report.json 2> $dir/stderr; fi
  python3 - $dir/report.json $name $mode <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); name, mode = sys.argv[2], sys.argv[3]
failed = [s["seed"] for s in r["per_schedule"] if not s["passed"]]
rules = {x["rule"].split(" ")[0]: x["violations"] for x in r["rules"] if x["violations"]}
ops = sum(s.get("operations", 0) for s in r["per_schedule"]) if isinstance(r["per_schedule"][0].get("operations"), int) else r.get("operations")
print(f"{name:20} {mode}: failed {len(failed)} of {len(r['per_schedule'])} {failed} rules {rules} ops {ops}")
PY
}
date
run control ap; run control cp
for c in relay-skip version-gate-off inbox-dedup-off outbox-outside-txn compensation-off; do run $c ap; done
run cp-check-off cp
date
