#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests marked `slurm` (tests/test_slurm.py).
#
#   bash .ci/slurm-up.sh      # install (root + apt-get) if missing, start munged, slurmctld, slurmd; wait for idle
#   bash .ci/slurm-down.sh    # stop what this script started, by pid
#
# The node is this host with two fake GPUs: gres device files that are /dev/null-like nodes, and `Flags=nvidia_gpu_env`
# so Slurm sets CUDA_VISIBLE_DEVICES per job exactly as on a GPU node. Everything lives in $HYBRIDLIB_SLURM_DIR
# (default /tmp/hybridlib-slurm): the config (SLURM_CONF=$HYBRIDLIB_SLURM_DIR/etc/slurm.conf), state, logs, pid
# files. Exit status: 0 = cluster up and idle; 3 = Slurm missing and cannot be installed here (no root or no
# apt-get; the message says which); anything else = it did not come up (the daemons' logs are printed).
set -euo pipefail
DIR="${HYBRIDLIB_SLURM_DIR:-/tmp/hybridlib-slurm}"
export SLURM_CONF="$DIR/etc/slurm.conf"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    if [ "$(id -u)" != 0 ]; then echo "slurm-up: Slurm is not installed and this is not root: cannot apt-get install it"; exit 3; fi
    if ! command -v apt-get >/dev/null; then echo "slurm-up: Slurm is not installed and there is no apt-get"; exit 3; fi
    echo "slurm-up: installing slurmctld slurmd munge (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd munge >/dev/null; } \
        || { echo "slurm-up: apt-get could not install slurmctld slurmd munge"; exit 3; }
fi
if [ "$(id -u)" != 0 ]; then echo "slurm-up: the daemons need root (slurmd runs jobs as their users)"; exit 3; fi

mkdir -p "$DIR"/{etc,state,spool,log,run,dev}
# a daemon already running from an earlier start: stop it first, so the one started below reads this config
bash "$(dirname "$0")/slurm-down.sh" >/dev/null 2>&1 || true

# munge: the authentication Slurm's daemons and commands share. Reuse a running munged, else start ours.
if ! { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }; then
    install -d -o munge -g munge -m 0755 /run/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 2>/dev/null >/etc/munge/munge.key; }
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$DIR/run/munged.pid"  # ours to stop in slurm-down.sh
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

HOST="$(hostname -s)"
NODE="$(slurmd -C | head -1)"  # this machine's real CPUs, sockets, cores, memory: Slurm drains a node that claims more
for i in 0 1; do  # the two fake GPUs: character devices like /dev/null (Slurm refuses plain files as gres)
    [ -c "$DIR/dev/nvidia$i" ] || { rm -f "$DIR/dev/nvidia$i"; mknod "$DIR/dev/nvidia$i" c 1 3 2>/dev/null \
        || ln -s /dev/null "$DIR/dev/nvidia$i"; }
done
cat >"$SLURM_CONF" <<EOF
ClusterName=hybridlib-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
SlurmctldPort=${HYBRIDLIB_SLURMCTLD_PORT:-6817}
SlurmdPort=${HYBRIDLIB_SLURMD_PORT:-6818}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
$NODE NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
PartitionName=ci Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$DIR/etc/gres.conf" <<EOF
NodeName=$HOST Name=gpu File=$DIR/dev/nvidia[0-1] Flags=nvidia_gpu_env
EOF

slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for i in $(seq 120); do
    state="$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)"
    case "$state" in
        idle) echo "slurm-up: one-node cluster up: node $HOST idle with gpu:2 (SLURM_CONF=$SLURM_CONF)"; exit 0 ;;
        down*|drain*|drng*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
echo "slurm-up: node $HOST did not become idle (state: ${state:-none}); daemon logs:"
tail -n 30 "$DIR"/log/*.log || true
exit 1
