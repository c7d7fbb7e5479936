#!/usr/bin/env bash
# Stop everything tests/slurm/start_local_slurm.sh started for STATE_DIR, and nothing else.
#
#   tests/slurm/stop_local_slurm.sh [--wipe] [STATE_DIR]
#
# Jobs still queued or running are cancelled first; then slurmd, slurmctld, slurmdbd, MariaDB and
# munged are stopped by pid file (SIGTERM, then SIGKILL after 15 s); then any process left that
# carries GEOVQ_SLURM_DAEMON=STATE_DIR in its environment, and its descendants (slurmscriptd,
# slurmstepd), is stopped the same way. A process counts as stopped once it is gone or a zombie
# (state Z: it has exited and holds nothing; only its parent can reap it). Idempotent; exit status
# 0 when nothing of ours is left running, 1 otherwise. --wipe also deletes STATE_DIR.
set -uo pipefail
WIPE=0
[ "${1:-}" = --wipe ] && { WIPE=1; shift; }
BASE=${1:-${GEOVQ_SLURM_DIR:-${TMPDIR:-/tmp}/geovq-slurm}}
log() { echo "stop_local_slurm: $*" >&2; }
[ -d "$BASE" ] || { log "nothing to stop: no $BASE"; exit 0; }
BASE=$(cd "$BASE" && pwd -P)
export SLURM_CONF="$BASE/etc/slurm.conf"

running() { [ -e "/proc/$1" ] && ! grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }
# every live process started by start_local_slurm.sh for BASE, with its live descendants
ours() {
  local p set=" "
  for p in $(ls /proc | grep -E '^[0-9]+$'); do
    { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qxF "GEOVQ_SLURM_DAEMON=$BASE" && set="$set$p "
  done
  local table grew=1 pid ppid
  table=$(ps -eo pid=,ppid=)
  while [ "$grew" = 1 ]; do
    grew=0
    while read -r pid ppid; do
      case "$set" in *" $pid "*) continue ;; esac
      case "$set" in *" $ppid "*) set="$set$pid "; grew=1 ;; esac
    done <<< "$table"
  done
  for p in $set; do running "$p" && echo "$p"; done
  return 0
}
stop_pid() {  # stop_pid PID NAME
  local pid=$1
  running "$pid" || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 60); do running "$pid" || break; sleep 0.25; done
  if running "$pid"; then
    log "$2 ($pid) ignored SIGTERM, sending SIGKILL"
    kill -9 "$pid" 2>/dev/null
    for _ in $(seq 20); do running "$pid" || break; sleep 0.25; done
  fi
  # exited daemons were reparented to PID 1 (or a subreaper); until it reaps them they are zombies
  [ -e "/proc/$pid" ] && ! running "$pid" &&
    log "$2 ($pid) exited (zombie until its parent, PID $(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null), reaps it)"
  return 0
}
stop_file() { [ -s "$1" ] && stop_pid "$(cat "$1")" "$(basename "$1" .pid)"; return 0; }

# 1. cancel our cluster's jobs while slurmctld still answers
if [ -s "$BASE/run/slurmctld.pid" ] && running "$(cat "$BASE/run/slurmctld.pid")"; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then
    log "cancelling jobs:" $jobs
    echo "$jobs" | xargs -r timeout 10 scancel 2>/dev/null
    for _ in $(seq 20); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
# 2. daemons by pid file, clients before servers
stop_file "$BASE/run/slurmd.pid"
stop_file "$BASE/run/slurmctld.pid"
stop_file "$BASE/run/slurmdbd.pid"
stop_file "$BASE/run/mysqld/mysqld.pid"
stop_file "$BASE/run/munge/munged.pid"
# 3. anything else of ours (a daemon whose pid file was lost, slurmstepd, slurmscriptd)
for pid in $(ours); do stop_pid "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)"; done

left=$(ours)
if [ -n "$left" ]; then
  log "still running:"; ps -o pid,ppid,stat,args -p "$(echo $left | tr ' ' ,)" >&2
  exit 1
fi
if [ "$WIPE" = 1 ]; then
  rm -rf "$BASE"/{etc,state,spool,log,run,munge,mysql,env,apt.log}
  rmdir "$BASE" 2>/dev/null || log "kept $BASE (not empty)"
fi
log "local SLURM under $BASE stopped"
