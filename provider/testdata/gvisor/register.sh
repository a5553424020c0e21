#!/usr/bin/env bash
# Installs gVisor's runsc (the Debian package) and registers it with the local Docker daemon,
# together with the fixture runtimes the provider's tests need. Idempotent: it changes only
# what is missing and prints what it did.
#
# Registered in /etc/docker/daemon.json ("runtimes"; other keys are kept as they are):
#   runsc                     runsc --network=none
#       The runtime operators use. Debian's runsc (0.0~20221219) misdetects the root network
#       namespace on recent kernels and refuses to start a sandbox unless it runs without
#       networking; pinfold's containers never have a network, so nothing is lost.
#   pinfold-test-runsc-plain  runsc
#       Registered but broken: every start fails (and leaks the runtime's processes).
#   pinfold-test-runsc-kvm    runsc --network=none --platform=kvm
#       Registered but hangs: the KVM platform never starts under nested virtualisation.
#   pinfold-test-kata-x       runc
#       A VM-sounding name for plain runc: isolation must come from evidence, not names.
#
# The daemon is first asked to reload (SIGHUP; "runtimes" is reloadable, and a reload keeps
# running containers, which a restart without live-restore would kill). Only when the new
# runtimes do not show up is it restarted the way it was started (systemd, the init script,
# or the same dockerd command line in the background).
#
# Usage: provider/testdata/gvisor/register.sh
set -euo pipefail

say() { printf 'gvisor: %s\n' "$*"; }
die() { printf 'gvisor: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs a package and edits /etc/docker/daemon.json)"

if ! command -v runsc >/dev/null 2>&1; then
    say "installing the runsc package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends runsc
else
    say "runsc present: $(command -v runsc)"
fi
command -v jq >/dev/null 2>&1 || die "jq is needed to edit daemon.json (apt-get install jq)"
runsc_bin="$(command -v runsc)"
say "$("$runsc_bin" --version | head -n 1)"
runc_bin="$(command -v runc || true)"
[ -n "$runc_bin" ] || die "no runc binary on PATH for the pinfold-test-kata-x fixture"

want="$(jq -n --arg runsc "$runsc_bin" --arg runc "$runc_bin" '{
  "runsc": {"path": $runsc, "runtimeArgs": ["--network=none"]},
  "pinfold-test-runsc-plain": {"path": $runsc},
  "pinfold-test-runsc-kvm": {"path": $runsc, "runtimeArgs": ["--network=none", "--platform=kvm"]},
  "pinfold-test-kata-x": {"path": $runc}
}')"

conf=/etc/docker/daemon.json
mkdir -p "$(dirname "$conf")"
[ -s "$conf" ] || echo '{}' >"$conf"
current="$(jq -c '.runtimes // {}' "$conf")" || die "$conf is not valid JSON"
merged="$(jq -c --argjson want "$want" '(.runtimes // {}) + $want' "$conf")"
if [ "$(jq -S -c . <<<"$current")" = "$(jq -S -c . <<<"$merged")" ]; then
    say "$conf already registers runsc and the test runtimes"
else
    tmp="$(mktemp "$conf.XXXXXX")"
    jq --argjson want "$want" '.runtimes = ((.runtimes // {}) + $want)' "$conf" >"$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$conf"
    say "registered in $conf: $(jq -r 'keys | join(", ")' <<<"$want")"
fi

names() { docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null; }
registered() {
    local have
    have=" $(names) "
    for n in $(jq -r 'keys[]' <<<"$want"); do
        case "$have" in *" $n "*) ;; *) return 1 ;; esac
    done
}
wait_for() { # SECONDS CONDITION...
    local n=$1
    shift
    for _ in $(seq 1 "$n"); do
        "$@" && return 0
        sleep 1
    done
    return 1
}

if registered; then
    say "the daemon lists them: $(names)"
    exit 0
fi
pidfile=/var/run/docker.pid
pid="$(cat "$pidfile" 2>/dev/null || true)"
[ -n "$pid" ] && [ -d "/proc/$pid" ] || die "dockerd is not running (no live pid in $pidfile)"
say "asking dockerd (pid $pid) to reload its configuration (SIGHUP)"
kill -HUP "$pid"
if wait_for 10 registered; then
    say "reloaded; the daemon lists: $(names)"
    exit 0
fi

# The reload did not take: restart the daemon the way it was started.
cmdline=()
while IFS= read -r -d '' a; do cmdline+=("$a"); done <"/proc/$pid/cmdline"
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && systemctl is-active --quiet docker 2>/dev/null; then
    say "restarting the daemon with systemctl (it runs as a systemd unit)"
    systemctl restart docker
elif [ -s /var/run/docker-ssd.pid ] && service docker status >/dev/null 2>&1; then
    say "restarting the daemon with its init script"
    service docker restart
else
    say "restarting the daemon as it was started: ${cmdline[*]}"
    kill -TERM "$pid"
    wait_for 30 sh -c "! kill -0 $pid 2>/dev/null" || die "dockerd (pid $pid) did not stop within 30 s"
    setsid "${cmdline[@]}" >>/var/log/dockerd.log 2>&1 </dev/null &
fi
wait_for 60 docker info >/dev/null 2>&1 || die "the daemon does not answer after the restart (see /var/log/dockerd.log)"
wait_for 10 registered || die "the daemon still does not list the runtimes: $(names)"
say "restarted; the daemon lists: $(names)"
