# Sourced by the process-level benchmark scripts (cli_latency.sh, memory.sh): a registry with
# the wordfreq example approved and one `provider run` on loopback, each its own process,
# in a fresh directory W (the caller's working directory from here on). Sets B, R, W, URL,
# ID, LK, P1, P2, REG and PROV (their pids), ADDR and PEER (the provider's address and id),
# and writes corpus.txt. `network_stop` ends both processes and removes W.
B=${BIN:?set BIN to the directory holding task-defs, provider and requestor}
R=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=$(mktemp -d)
cd "$W"
$B/task-defs keygen -o author.key >/dev/null
P1=$($B/task-defs keygen -o r1.key); P2=$($B/task-defs keygen -o r2.key)
$B/task-defs serve --data reg --listen 127.0.0.1:0 --reviewer "$P1" --reviewer "$P2" --threshold 2 > reg.out 2>reg.err &
REG=$!
for _ in $(seq 50); do grep -q "listening on" reg.out 2>/dev/null && break; sleep 0.1; done
URL=$(head -1 reg.out | sed 's/listening on //')
ID=$($B/task-defs publish "$R/task-defs/examples/wordfreq" --registry "$URL" --key author.key --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
$B/task-defs review approve "$ID" --registry "$URL" --key r1.key >/dev/null
$B/task-defs review approve "$ID" --registry "$URL" --key r2.key >/dev/null
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
PROV=$!
for _ in $(seq 100); do grep -q "^ready" node.out 2>/dev/null && break; sleep 0.1; done
ADDR=$(grep "^listening on" node.out | head -1 | sed 's/listening on //')
PEER=$(grep "^peer id" node.out | sed 's/peer id //')
echo "the cat and the hat" > corpus.txt

network_stop() {
  kill "$PROV" "$REG" 2>/dev/null || true
  wait "$PROV" "$REG" 2>/dev/null || true
  cd /
  rm -rf "$W"
}
