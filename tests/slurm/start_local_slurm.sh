#!/usr/bin/env bash
# Start a real single-node SLURM on localhost for geovq's SLURM test (Debian 12: SLURM 22.05).
# Adapted from /work/shared/slurm/start_local_slurm.sh, but self-contained: nothing machine-wide
# is written or used except the Debian packages (installed with apt-get when missing).
#
#   tests/slurm/start_local_slurm.sh [STATE_DIR]
#
# Everything lives under STATE_DIR (default $GEOVQ_SLURM_DIR, else ${TMPDIR:-/tmp}/geovq-slurm):
# slurm.conf/slurmdbd.conf (etc/), our own munge key and socket, a MariaDB data dir with its unix
# socket, spool, state, logs and pid files (run/). Clients find this cluster through
#   . STATE_DIR/env    # export SLURM_CONF=STATE_DIR/etc/slurm.conf PATH=STATE_DIR/bin:$PATH
# so /etc/slurm, /etc/munge, /run/munge and /run/mysqld are never touched, and the daemons listen
# on their own ports ($GEOVQ_SLURM_PORT, default 16817, 16818 (slurmd), 16819 (slurmdbd)), so a
# cluster started with the shared recipe can run at the same time.
#
#   SLURM_ACCOUNTING=1 (default): + MariaDB + slurmdbd, so sacct works (the plugin's default)
#   SLURM_ACCOUNTING=0: no database; sacct is unusable -> use profiles/slurm-noacct (squeue)
#
# Idempotent: daemons that are alive (pid file, not a zombie) are kept; a changed slurm.conf
# restarts slurmctld/slurmd. Every daemon is started with GEOVQ_SLURM_DAEMON=STATE_DIR in its
# environment, which is how stop_local_slurm.sh (and the test) find everything this started.
# Must run as root. Ends with one real batch job (and its accounting record) as a smoke test.
set -euo pipefail
BASE=${1:-${GEOVQ_SLURM_DIR:-${TMPDIR:-/tmp}/geovq-slurm}}
ACCT=${SLURM_ACCOUNTING:-1}
PORT=${GEOVQ_SLURM_PORT:-16817}
GPUS=${GEOVQ_SLURM_GPUS:-1}   # generic resources "gpu" the node advertises (no device: count only)
log() { echo "start_local_slurm: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
mkdir -p "$BASE"
BASE=$(cd "$BASE" && pwd -P)
chmod 755 "$BASE"
# munged and mariadbd run as their own users: they must reach STATE_DIR (mkdtemp/pytest make 0700 dirs)
for u in munge mysql; do
  if id "$u" > /dev/null 2>&1 && ! runuser -u "$u" -- test -x "$BASE"; then
    log "user $u cannot reach $BASE: use a STATE_DIR whose parents are world-searchable"; exit 1
  fi
done
alive() { [ -s "$1" ] && [ -e "/proc/$(cat "$1")" ] && ! grep -q ') Z' "/proc/$(cat "$1")/stat" 2>/dev/null; }
waitfor() {
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "timed out waiting for: $*"; return 1
}
# Daemons: detached (setsid, no stdio) and marked, so that the stop script can find them all.
daemon() { GEOVQ_SLURM_DAEMON="$BASE" setsid "$@" < /dev/null > /dev/null 2>&1 & }

# 1. packages (skipped when present)
pkgs="slurmctld slurmd slurm-client munge"; [ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
missing=$(for p in $pkgs; do dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  log "installing:" $missing
  command -v apt-get > /dev/null || { log "apt-get not available"; exit 2; }
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d (or its absence of systemd) keeps the packages' own services from starting
  apt="apt-get -o DPkg::Lock::Timeout=600 -y -qq"
  $apt install --no-install-recommends $missing > "$BASE/apt.log" 2>&1 ||
    { $apt update >> "$BASE/apt.log" 2>&1 &&
      $apt install --no-install-recommends $missing >> "$BASE/apt.log" 2>&1; } ||
    { log "apt-get install failed, see $BASE/apt.log"; exit 2; }
fi

mkdir -p "$BASE"/{etc,state,spool,log,run}
install -d -o munge -g munge -m 700 "$BASE/munge"
install -d -o munge -g munge -m 755 "$BASE/run/munge"
export SLURM_CONF="$BASE/etc/slurm.conf"
MUNGE_SOCKET="$BASE/run/munge/munge.socket"
# snakemake-executor-plugin-slurm-jobstep (0.6.x) runs each job through an inner `srun` with every
# SLURM_* variable removed, SLURM_CONF included, so inside a job srun would look for
# /etc/slurm/slurm.conf (or configless DNS records) and fail. Real clusters keep their config
# there; this one keeps it under STATE_DIR, so it puts an srun on PATH that restores SLURM_CONF.
mkdir -p "$BASE/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec /usr/bin/srun "$@"\n' "$SLURM_CONF" > "$BASE/bin/srun"
chmod 755 "$BASE/bin/srun"
printf 'export SLURM_CONF=%s\nexport PATH=%s/bin:$PATH\n' "$SLURM_CONF" "$BASE" > "$BASE/env"

# 2. munge: our own key and socket
if [ ! -s "$BASE/munge/munge.key" ]; then
  mungekey --create --keyfile="$BASE/munge/munge.key"
  chown munge:munge "$BASE/munge/munge.key"; chmod 400 "$BASE/munge/munge.key"
fi
munge_ok() { munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET"; }
if ! alive "$BASE/run/munge/munged.pid" || ! munge_ok > /dev/null 2>&1; then
  # --force: a stale socket left by a killed munged is removed instead of refusing to start
  GEOVQ_SLURM_DAEMON="$BASE" runuser -u munge -- /usr/sbin/munged --force --socket="$MUNGE_SOCKET" \
    --key-file="$BASE/munge/munge.key" --pid-file="$BASE/run/munge/munged.pid" \
    --log-file="$BASE/munge/munged.log" --seed-file="$BASE/munge/munged.seed"
fi
waitfor 20 munge_ok

# 3. slurm.conf (restart slurmctld/slurmd only if it changed)
if [ "$ACCT" = 1 ]; then
  acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux"
else
  acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
mem_mb=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 8 / 10 ))
# Fake GPUs, so that GPU requests (sbatch --gpus=N) can be scheduled and accounted: SLURM drops
# GPUs without a device file; any character device will do (task/none binds nothing to it).
gres=""
rm -f "$BASE/etc/gres.conf"
if [ "$GPUS" -gt 0 ]; then
  [ "$GPUS" -le 4 ] || { log "GEOVQ_SLURM_GPUS: at most 4"; exit 1; }
  gres="Gres=gpu:$GPUS"
  for dev in $(echo /dev/null /dev/zero /dev/full /dev/urandom | cut -d' ' -f1-"$GPUS"); do
    echo "NodeName=localhost Name=gpu File=$dev" >> "$BASE/etc/gres.conf"
  done
fi
cat > "$SLURM_CONF.new" <<EOF
# written by $0
ClusterName=geovqlocal
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=600
GresTypes=gpu
$acct
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) RealMemory=$mem_mb $gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
restart=0
if cmp -s "$SLURM_CONF.new" "$SLURM_CONF"; then rm "$SLURM_CONF.new"
else mv "$SLURM_CONF.new" "$SLURM_CONF"; restart=1; fi

# 4. MariaDB (unix socket under STATE_DIR, no TCP) + slurmdbd
if [ "$ACCT" = 1 ]; then
  export MYSQL_UNIX_PORT="$BASE/run/mysqld/mysqld.sock"  # read by slurmdbd's MariaDB client
  install -d -o mysql -g mysql -m 755 "$BASE/run/mysqld"
  if ! mariadb-admin --no-defaults -S "$MYSQL_UNIX_PORT" ping > /dev/null 2>&1; then
    if [ ! -d "$BASE/mysql/mysql" ]; then
      install -d -o mysql -g mysql "$BASE/mysql"
      mariadb-install-db --no-defaults --user=mysql --datadir="$BASE/mysql" \
        --auth-root-authentication-method=socket --skip-test-db > "$BASE/log/mariadb-install.log" 2>&1
    fi
    daemon /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$BASE/mysql" \
      --socket="$MYSQL_UNIX_PORT" --skip-networking --pid-file="$BASE/run/mysqld/mysqld.pid" \
      --log-error="$BASE/log/mariadb.err" --innodb-lock-wait-timeout=900
    waitfor 120 mariadb-admin --no-defaults -S "$MYSQL_UNIX_PORT" ping
  fi
  cat > "$BASE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=geovq_slurm_acct_db
EOF
  chmod 600 "$BASE/etc/slurmdbd.conf"
  alive "$BASE/run/slurmdbd.pid" || daemon /usr/sbin/slurmdbd -D
  waitfor 60 sacctmgr -n show cluster
fi

# 5. slurmctld + slurmd
if [ "$restart" = 1 ]; then
  for d in slurmd slurmctld; do
    alive "$BASE/run/$d.pid" || continue
    kill "$(cat "$BASE/run/$d.pid")"
    for _ in $(seq 40); do alive "$BASE/run/$d.pid" || break; sleep 0.5; done
  done
fi
alive "$BASE/run/slurmctld.pid" || daemon /usr/sbin/slurmctld -D -i
waitfor 60 scontrol ping
alive "$BASE/run/slurmd.pid" || daemon /usr/sbin/slurmd -D -N localhost
node_state() { sinfo -h -n localhost -o %t; }
waitfor 60 sh -c 'sinfo -h -n localhost -o %t | grep -Eq "^(idle|mix|alloc|drain|down)"'
node_state | grep -Eq '^(drain|down)' && scontrol update nodename=localhost state=resume
waitfor 60 sh -c 'sinfo -h -n localhost -o %t | grep -Eq "^(idle|mix|alloc)$"'

# 6. smoke test: a real batch job running an srun step with SLURM_CONF unset, as the plugin's jobs do
#    (and its accounting record)
export PATH="$BASE/bin:$PATH"
jid=$(sbatch --parsable --wait -o "$BASE/log/smoke-%j.out" -t 1 --mem 10 -J geovq-smoke --wrap "env -u SLURM_CONF srun -n1 true")
if [ "$ACCT" = 1 ]; then
  waitfor 60 sh -c "sacct -n -X -j $jid -o State | grep -q COMPLETED"
fi
log "local SLURM ready under $BASE (accounting=$ACCT, smoke job $jid ok); . $BASE/env"
