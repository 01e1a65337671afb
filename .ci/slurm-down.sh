#!/usr/bin/env bash
# Stop the one-node cluster of .ci/slurm-up.sh: slurmd, slurmctld, and munged if that script started it, each by
# the pid in its pid file (nothing is killed by name).
DIR="${HYBRIDLIB_SLURM_DIR:-/tmp/hybridlib-slurm}"
for daemon in slurmd slurmctld munged; do
    pidfile="$DIR/run/$daemon.pid"
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "slurm-down: stopped $daemon (pid $pid)"
    fi
    rm -f "$pidfile"
done
