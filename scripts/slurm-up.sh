#!/usr/bin/env bash
# Brings up drover's single-node test Slurm (slurmctld + slurmd on localhost, munge auth, no
# accounting database) that the Slurm tests and the submission benchmark run against.
#
# Idempotent and fast when already up: it installs slurm-wlm and munge with apt only when
# `sbatch` is missing, rewrites /etc/slurm/slurm.conf from scripts/slurm/slurm.conf.in only when
# the rendered file differs (then restarts the daemons), and otherwise just checks that the node
# answers. Needs root (CI and the dev machine run as root). Prints one line per action.
#
# Environment: DROVER_SLURM_SKIP=1 skips everything (for machines that already have a real
# cluster in /etc/slurm and do not want this one).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${DROVER_SLURM_SKIP:-0}" == 1 ]]; then
    echo "slurm-up: skipped (DROVER_SLURM_SKIP=1)"
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "slurm-up: needs root to install and start Slurm (run as root, or set DROVER_SLURM_SKIP=1)" >&2
    exit 1
fi

if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm-up: installing slurm-wlm and munge with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

conf_dir=/etc/slurm
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /run/munge /var/log
cpus=$(nproc)
# RealMemory must not exceed what slurmd sees, or the node is drained as "Low RealMemory".
mem_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
rendered=$(sed -e "s/@CPUS@/$cpus/" -e "s/@MEMORY@/$mem_mb/" scripts/slurm/slurm.conf.in)
changed=0
if [[ ! -f "$conf_dir/slurm.conf" ]] || [[ "$(cat "$conf_dir/slurm.conf")" != "$rendered" ]]; then
    printf '%s\n' "$rendered" >"$conf_dir/slurm.conf"
    changed=1
    echo "slurm-up: wrote $conf_dir/slurm.conf"
fi
running() { pgrep -x "$1" >/dev/null; }
fail() {
    echo "slurm-up: $1" >&2
    for log in /var/log/slurmctld.log /var/log/slurmd.log; do
        echo "--- $log (tail)" >&2
        tail -n 20 "$log" >&2 || true
    done
    exit 1
}

if [[ ! -s /etc/munge/munge.key ]]; then
    echo "slurm-up: creating a munge key"
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
fi
chown munge:munge /run/munge 2>/dev/null || true
if ! running munged; then
    echo "slurm-up: starting munged"
    # munged refuses to run as root without --force; as the munge user it needs no flag.
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "munged" 2>/dev/null || munged --force
    else
        munged --force
    fi
fi

if [[ "$changed" == 1 ]]; then
    # New config: restart both daemons so they agree on it.
    for d in slurmctld slurmd; do
        if running "$d"; then
            echo "slurm-up: restarting $d"
            pkill -x "$d" || true
        fi
    done
    for _ in $(seq 50); do running slurmctld || running slurmd || break; sleep 0.1; done
fi
if ! running slurmctld; then
    echo "slurm-up: starting slurmctld"
    slurmctld || fail "slurmctld did not start"
fi
if ! running slurmd; then
    echo "slurm-up: starting slurmd"
    slurmd -N localhost || fail "slurmd did not start"
fi

# Wait for the node to accept jobs. A node left DOWN/DRAIN by an earlier unclean stop is resumed.
for i in $(seq 120); do
    state=$(sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
        idle | mixed | allocated | completing)
            [[ "$i" == 1 ]] || echo "slurm-up: node localhost is $state"
            exit 0
            ;;
        down* | drain* | drained*)
            scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
            ;;
    esac
    sleep 0.5
done
fail "the node did not become idle within 60 s; last state: '${state:-none}'"
