#!/usr/bin/env bash
# Requestor and provider memory, each its own process (the scale example shares one process):
# the same set-up as cli_latency.sh (a registry with wordfreq approved, one `provider run` on
# loopback), then the provider's resident memory idle after start, then sequential
# `requestor run ID --provider PEER --bootstrap ADDR` processes, each under /usr/bin/time
# for its peak RSS, with the provider's VmRSS and VmHWM (peak) read from /proc after the
# job counts in CHECKPOINTS. The provider's compile worker (a short-lived child process,
# once per definition) is not counted in the provider's figures.
#   BIN=target/debug CHECKPOINTS="30 200" demo/benches/memory.sh
set -euo pipefail
. "$(dirname "$0")/loopback.sh"
python3 - "$B" "$ID" "$PEER" "$ADDR" "$PROV" "$REG" <<'P'
import os, subprocess, sys, time
b, i, p, a, prov, reg = sys.argv[1:7]
marks = sorted(int(x) for x in os.environ.get('CHECKPOINTS', '30 200').split())

def status(pid):
    kv = {}
    for line in open(f'/proc/{pid}/status'):
        k, _, v = line.partition(':')
        kv[k] = v.strip()
    mib = lambda k: int(kv[k].split()[0]) / 1024
    return mib('VmRSS'), mib('VmHWM')

def show(what, pid):
    rss, hwm = status(pid)
    print(f'{what}: resident {rss:.1f} MiB, peak {hwm:.1f} MiB')

# Idle: started, registry view synced at its first ad tick, nothing offered yet.
time.sleep(5)
show('provider idle 5 s after ready', prov)
peaks, k = [], 0
for m in marks:
    while k < m:
        k += 1
        r = subprocess.run(['/usr/bin/time', '-f', '%M', '-o', 'time.out', b + '/requestor',
                            '--data-dir', 'st', 'run', i, '--provider', p, '--bootstrap', a, '--input', 'corpus.txt',
                            '--output', f'o{k}', '--json'], capture_output=True)
        assert r.returncode == 0, r.stderr
        peaks.append(int(open('time.out').read().split()[-1]) / 1024)
        subprocess.run(['rm', '-rf', f'o{k}'])
    show(f'provider after {k} jobs', prov)
s = sorted(peaks)
print(f'requestor run peak RSS over {len(s)} invocations: p50 {s[len(s)//2]:.1f} MiB, '
      f'min {s[0]:.1f} MiB, max {s[-1]:.1f} MiB')
show('registry (task-defs serve) at the end', reg)
P
network_stop
