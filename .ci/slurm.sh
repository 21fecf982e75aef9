#!/usr/bin/env bash
# A live single-node Slurm cluster for the `tuner submit` tests (Debian's slurm-wlm + munge,
# as root, no systemd; ../shared/notes/slurm-single-node.md).
#
#   bash .ci/slurm.sh start   install what is missing, start munged, slurmctld, slurmd
#   bash .ci/slurm.sh stop    stop only the daemons this script started
#
# Partitions: `debug` (default): this host, all its cores. `multi`: this host plus `ghost`, a
# node that never comes up; no job runs there, it only lets the tests see the refusals meant
# for a multi-node partition.
set -euo pipefail
STATE=/run/tuner-ci-slurm.pids

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm: installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  if sinfo -h >/dev/null 2>&1; then
    echo "slurm: a cluster is already up; using it (and leaving it up)"
    rm -f "$STATE"  # its daemons are not this run's to stop
    return
  fi
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge /var/spool/slurmd \
    /var/spool/slurmctld /etc/slurm
  [ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 400 /etc/munge/munge.key
  : > "$STATE"
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    su -s /bin/sh munge -c /usr/sbin/munged
    for _ in $(seq 20); do [ -f /run/munge/munged.pid ] && break; sleep 0.25; done
    echo "munged $(cat /run/munge/munged.pid)" >> "$STATE"
  fi
  local host cpus mem
  host=$(hostname)
  cpus=$(nproc)
  mem=$(free -m | awk '/Mem/{print int($2*0.8)}')
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=tunerci
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=root
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmctldLogFile=/var/log/slurmctld.log
SlurmdLogFile=/var/log/slurmd.log
KillWait=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=ghost NodeAddr=192.0.2.1 CPUs=1 RealMemory=100 State=DOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
PartitionName=multi Nodes=$host,ghost MaxTime=INFINITE State=UP
CONF
  slurmctld
  for _ in $(seq 40); do [ -f /run/slurmctld.pid ] && break; sleep 0.25; done
  echo "slurmctld $(cat /run/slurmctld.pid)" >> "$STATE"
  slurmd
  for _ in $(seq 40); do [ -f /run/slurmd.pid ] && break; sleep 0.25; done
  echo "slurmd $(cat /run/slurmd.pid)" >> "$STATE"
  for _ in $(seq 60); do
    sinfo -h -p debug -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
    sleep 0.5
  done
  sinfo
  srun -p debug -n1 true
  echo "slurm: up"
}

stop() {
  [ -f "$STATE" ] || return 0
  while read -r name pid; do
    kill "$pid" 2>/dev/null && echo "slurm: stopped $name ($pid)" || true
  done < <(tac "$STATE")
  rm -f "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
