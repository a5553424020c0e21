#!/usr/bin/env bash
# Process-level latency of a whole `requestor run` invocation against a running provider on
# loopback: a registry with the wordfreq example approved, one `provider run`, then RUNS (30)
# sequential `requestor run ID --provider PEER --bootstrap ADDR` processes after one warm-up,
# each verified (exit 0). Prints p50/p90/min/max wall time. The in-process figure for the same
# path is `cargo bench -p pinfold-demo --bench network`.
#   BIN=target/release RUNS=50 demo/benches/cli_latency.sh
set -euo pipefail
B=${BIN:?set BIN to the directory holding task-defs, provider and requestor}
R=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d)
cd $W
$B/task-defs keygen -o author.key >/dev/null
P1=$($B/task-defs keygen -o r1.key); P2=$($B/task-defs keygen -o r2.key)
$B/task-defs serve --data reg --listen 127.0.0.1:0 --reviewer "$P1" --reviewer "$P2" --threshold 2 > reg.out 2>reg.err &
for i in $(seq 50); do grep -q "listening on" reg.out 2>/dev/null && break; sleep 0.1; done
URL=$(head -1 reg.out | sed 's/listening on //')
ID=$($B/task-defs publish $R/task-defs/examples/wordfreq --registry $URL --key author.key --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
$B/task-defs review approve $ID --registry $URL --key r1.key >/dev/null
$B/task-defs review approve $ID --registry $URL --key r2.key >/dev/null
LK=$(cat reg/log.pub)
mkdir node
cat > node/provider.toml <<T
[network]
listen = ["/ip4/127.0.0.1/tcp/0"]
mdns = false
kad = false
[registry]
url = "$URL"
log_key = "$LK"
reviewers = ["$P1", "$P2"]
threshold = 2
T
$B/provider run --config node/provider.toml > node.out 2>node.err &
for i in $(seq 100); do grep -q "^ready" node.out 2>/dev/null && break; sleep 0.1; done
ADDR=$(grep "^listening on" node.out | head -1 | sed 's/listening on //')
PEER=$(grep "^peer id" node.out | sed 's/peer id //')
echo "the cat and the hat" > corpus.txt
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
kill %1 %2 2>/dev/null || true
rm -rf "$W"
