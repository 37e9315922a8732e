#!/bin/sh
# SWUpdate post-update command: re-check edgetune's tuning results, then run the command
# that was SWUpdate's post-update command before (usually a reboot).
#
#   /etc/swupdate.cfg:   globals: { postupdatecmd = "/usr/share/edgetune/hooks/swupdate/postupdate.sh reboot"; };
#   or on the command line:   swupdate -p '/usr/share/edgetune/hooks/swupdate/postupdate.sh reboot' ...
#
# SWUpdate runs postupdatecmd after a successful update (with swupdate-client only when it
# asks for it with -p). For a single-copy or an application update the new files are live,
# so `edgetune hook post-update` checks the stored results against them and queues
# re-tuning for the daemon. For a dual-copy (A/B) root file system this still runs in the
# old system: the real check happens in the new one, where edgetune-update.service runs
# once after the update (ConditionNeedsUpdate=/var) and the daemon re-checks at its start.
#
# edgetune never makes the update fail: whatever `edgetune hook post-update` returns (0
# checked, 3 budget ran out, 75 store busy, 1 error) is logged in one line and this script
# goes on. If arguments are given, it then execs them, so their exit status is this
# script's; without arguments it exits 0.
#
# Idempotent and safe to run again after a power loss. One line goes to stderr (SWUpdate's
# log) and to syslog when logger is present. EDGETUNE_BIN overrides the edgetune command
# (default /usr/bin/edgetune).

bin=${EDGETUNE_BIN:-/usr/bin/edgetune}
limit=${EDGETUNE_HOOK_TIMEOUT:-120}

log() {
    echo "edgetune (swupdate postupdate): $*" >&2
    if command -v logger >/dev/null 2>&1; then
        logger -t edgetune-swupdate -- "$*" 2>/dev/null || true
    fi
}

if [ ! -x "$bin" ]; then
    log "$bin is missing; nothing to check"
else
    if command -v timeout >/dev/null 2>&1; then
        out=$(timeout "$limit" "$bin" hook post-update 2>&1)
    else
        out=$("$bin" hook post-update 2>&1)
    fi
    rc=$?
    detail=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1)
    case $rc in
        0) log "results checked${detail:+: $detail}" ;;
        3) log "budget ran out, the rest is queued for the daemon${detail:+: $detail}" ;;
        75) log "the store is busy; the daemon re-checks at its next start${detail:+: $detail}" ;;
        *) log "check failed (exit $rc), left to the daemon${detail:+: $detail}" ;;
    esac
fi

if [ $# -gt 0 ]; then
    exec "$@"
fi
exit 0
