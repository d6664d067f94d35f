#!/usr/bin/env bash
# A one-node SLURM on this machine (Debian's slurm-wlm + munge), for rehearsing the sbatch
# scripts and for the tests: its own munge key and socket, config, state and logs in one folder,
# nothing in /etc touched. Needs root (slurmd starts jobs as their submitter).
#
#   slurm/local_cluster.sh start [DIR]    write DIR/slurm.conf, start munged, slurmctld, slurmd
#   slurm/local_cluster.sh stop [DIR]     stop them (the folder is kept, with its logs)
#   slurm/local_cluster.sh status [DIR]   sinfo, or exit 1 when it is not running
#
# DIR defaults to $SMOLRECIPE_SLURM_DIR, else /tmp/smolrecipe-slurm. Point the SLURM commands at it
# with `export SLURM_CONF=DIR/slurm.conf` (printed by start).
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

cmd=${1:-}
case $cmd in
  -h|--help) usage; exit 0 ;;
  start|stop|status) ;;
  *) usage >&2; exit 2 ;;
esac
dir=$(realpath -m "${2:-${SMOLRECIPE_SLURM_DIR:-/tmp/smolrecipe-slurm}}")
conf=$dir/slurm.conf
export SLURM_CONF=$conf

stop_pidfile() {  # stop the daemon whose pid is in $1, waiting for it to exit
  local pidfile=$1 pid
  [[ -s $pidfile ]] || return 0
  pid=$(<"$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

if [[ $cmd == status ]]; then
  if ! { [[ -f $conf ]] && sinfo --noheader >/dev/null 2>&1; }; then echo "no SLURM running from $dir" >&2; exit 1; fi
  sinfo
  exit 0
fi

if [[ $cmd == stop ]]; then
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  stop_pidfile "$dir/munged.pid"
  echo "stopped the SLURM of $dir"
  exit 0
fi

for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found. Fix: apt-get install slurm-wlm munge" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "error: slurmd must run as root to start jobs. Fix: run this as root" >&2; exit 1; }

mkdir -p "$dir"/{state,spool,munge}
chmod 700 "$dir/munge"
[[ -s $dir/munge/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 status=none >"$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"; }
socket=$dir/munge/munge.socket
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 ))  # 10% left to the daemons
port=${SMOLRECIPE_SLURM_PORT:-6817}

cat >"$conf.tmp" <<CONF
# Written by slurm/local_cluster.sh: one node, this machine, jobs run as their submitter.
ClusterName=smolrecipe
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
GresTypes=gpu
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
NodeName=localnode NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mv "$conf.tmp" "$conf"

munged --key-file="$dir/munge/munge.key" --socket="$socket" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed" --force
slurmctld -f "$conf"
slurmd -f "$conf" -N localnode

for _ in $(seq 100); do
  if sinfo --noheader --states=idle,mixed,allocated 2>/dev/null | grep -q .; then
    echo "SLURM up: 1 node, $cpus CPUs, ${memory_mb} MB (export SLURM_CONF=$conf)"
    exit 0
  fi
  sleep 0.2
done
echo "error: SLURM did not come up within 20 s; see $dir/slurmctld.log and $dir/slurmd.log" >&2
exit 1
