#!/usr/bin/env bash
# Process-level latency of a whole `requestor run` invocation against a running provider on
# loopback: a registry with the wordfreq example approved, one `provider run`, then RUNS (30)
# sequential `requestor run ID --provider PEER --bootstrap ADDR` processes after one warm-up,
# each verified (exit 0). Prints p50/p90/min/max wall time. The in-process figure for the same
# path is `cargo bench -p pinfold-demo --bench network`.
#   BIN=target/release RUNS=50 demo/benches/cli_latency.sh
set -euo pipefail
. "$(dirname "$0")/loopback.sh"
DD=()
if $B/requestor --help | grep -q -- --data-dir; then DD=(--data-dir st); fi
# warm-up (bundle fetched and compiled once)
$B/requestor "${DD[@]}" run $ID --provider $PEER --bootstrap $ADDR --input corpus.txt --output o0 --json >/dev/null
python3 - "$B" "$ID" "$PEER" "$ADDR" "${DD[@]}" <<'P'
import subprocess,sys,time,os
b,i,p,a=sys.argv[1:5]
dd=sys.argv[5:]
ts=[]
for k in range(int(os.environ.get('RUNS','30'))):
    t=time.perf_counter()
    r=subprocess.run([b+"/requestor",*dd,"run",i,"--provider",p,"--bootstrap",a,"--input","corpus.txt","--output",f"o{k+1}","--json"],capture_output=True)
    ts.append(time.perf_counter()-t)
    assert r.returncode==0, r.stderr
ts.sort()
print(f"runs {len(ts)} p50 {ts[len(ts)//2]*1e3:.0f} ms p90 {ts[int(len(ts)*0.9)]*1e3:.0f} ms min {ts[0]*1e3:.0f} ms max {ts[-1]*1e3:.0f} ms")
P
network_stop
