#!/usr/bin/env bash
# A private single-node Slurm for trying `ssmlab sweep --slurm` (and for its test): munged, slurmctld and slurmd run
# as the calling user from DIR (config, state, logs, munge key and socket), on free ports, with this host's CPUs as
# one node in partition `debug`. Needs Debian's slurmctld, slurmd, slurm-client and munge (scripts/setup.sh).
#   scripts/slurm-local.sh start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`; exit 0 once `sinfo` sees the node idle
#   scripts/slurm-local.sh stop DIR
set -euo pipefail
cmd=${1:-}; D=${2:-}
[ -n "$cmd" ] && [ -n "$D" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
if [ "$cmd" = stop ]; then
  for p in slurmd slurmctld munge/munged; do
    [ -f "$D/$p.pid" ] && kill "$(cat "$D/$p.pid")" 2>/dev/null || true
  done
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
for b in munged slurmctld slurmd sbatch sinfo; do
  command -v "$b" > /dev/null || { echo "slurm-local: $b not found (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 3; }
done
mkdir -p "$D"/{state,spool,log,munge}
D=$(cd "$D" && pwd)
[ ${#D} -lt 80 ] || { echo "slurm-local: $D is too long for a socket path; use a shorter folder" >&2; exit 2; }
head -c 1024 /dev/urandom > "$D/munge/munge.key"; chmod 400 "$D/munge/munge.key"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
H=$(hostname -s); U=$(id -un)
cat > "$D/slurm.conf" <<CONF
ClusterName=ssmlablocal
SlurmctldHost=$H
SlurmUser=$U
SlurmdUser=$U
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
NodeName=$H CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
munged --socket="$D/munge/munge.socket" --key-file="$D/munge/munge.key" --pid-file="$D/munge/munged.pid" \
       --log-file="$D/munge/munged.log" --seed-file="$D/munge/seed" -f
export SLURM_CONF="$D/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 40); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then echo "export SLURM_CONF=$SLURM_CONF"; exit 0; fi
  sleep 0.5
done
echo "slurm-local: the node did not come up within 20 s; logs in $D/log" >&2
"$0" stop "$D"
exit 4
