#!/usr/bin/env bash
# Install the .deb into a fresh Debian 12 (debootstrap minbase) and run edgetune there.
#
#   packaging/test-deb.sh [dist/edgetune_<version>_<arch>.deb]
#
# Needs root and the Debian package mirror that apt on this machine uses (read from
# /etc/apt/sources.list*; MIRROR=... overrides it). Without an argument it takes the newest
# dist/edgetune_*.deb, building one with packaging/build-deb.sh if there is none.
#
# In the chroot: systemd is installed first (not started: it only lets the package's
# postinst enable the units, and systemd-analyze check the installed units), then
# `apt-get install ./edgetune_*.deb` (apt fetches python3, gcc ... from the mirror), then:
# edgetune --version, edgetune probe --no-bandwidth, edgetune status [--json],
# `runuser -u edgetune -- edgetune hook post-update`, the hook scripts, a short
# `edgetune daemon` run stopped with SIGTERM, and finally a purge. A command of the agent
# that this build does not have yet is reported as SKIPPED (REQUIRE_ALL=1 makes it a
# failure). Prints the time of each phase and the size of the package.
#
# KEEP_CHROOT=1 keeps the chroot (its path is printed); SUITE (default bookworm).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=${SUITE:-bookworm}
started=$(date +%s)
phase_start=$started
skipped=()

die() { echo "test-deb: FAILED: $*" >&2; exit 1; }
phase() {
    local now
    now=$(date +%s)
    printf 'test-deb: [%4ss] %s\n' "$((now - phase_start))" "$1"
    phase_start=$now
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, mount)"

deb=${1:-}
if [ -z "$deb" ]; then
    deb=$(find "$ROOT/dist" -maxdepth 1 -name 'edgetune_*.deb' -printf '%T@ %p\n' 2>/dev/null \
          | sort -rn | head -n 1 | cut -d' ' -f2-)
    if [ -z "$deb" ]; then
        "$ROOT/packaging/build-deb.sh"
        deb=$(find "$ROOT/dist" -maxdepth 1 -name 'edgetune_*.deb' | head -n 1)
        phase "built $deb"
    fi
fi
[ -f "$deb" ] || die "no package: $deb"
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
echo "test-deb: $deb, $(du -h "$deb" | cut -f1) ($(stat -c %s "$deb") bytes)," \
     "installed size $(dpkg-deb -f "$deb" Installed-Size) KiB"

if ! command -v debootstrap >/dev/null; then
    apt-get install -y -qq debootstrap >/dev/null
    phase "installed debootstrap"
fi

# The mirror apt uses here: the first "deb" source of $SUITE itself (not -security/-updates).
mirror_of_sources() {
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                             if ($(i + 1) == suite) { print $i; exit } }' "$file"
    done
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v suite="$SUITE" '
            function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri; found = 1 }
                               types = ""; suites = ""; uri = "" }
            /^[[:space:]]*$/ { flush(); if (found) exit; next }
            /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
            /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); split($0, u, " "); uri = u[1] }
            END { if (!found) flush() }' "$file"
    done
}
MIRROR=${MIRROR:-$(mirror_of_sources | head -n 1)}
[ -n "$MIRROR" ] || die "no deb source for $SUITE in /etc/apt/sources.list*; set MIRROR"

chroot_dir=$(mktemp -d "${TMPDIR:-/tmp}/edgetune-chroot.XXXXXX")
chmod 0755 "$chroot_dir"  # it becomes the chroot's /: mktemp's 0700 would lock out every other user
cleanup() {
    local status=$? m
    for m in dev/pts dev sys proc; do
        if mountpoint -q "$chroot_dir/$m" 2>/dev/null; then
            umount -l "$chroot_dir/$m" || true
        fi
    done
    if [ "${KEEP_CHROOT:-0}" = 1 ]; then
        echo "test-deb: kept $chroot_dir"
    elif ! grep -qF " $chroot_dir/" /proc/mounts; then
        rm -rf --one-file-system "$chroot_dir"
    else
        echo "test-deb: $chroot_dir still has mounts; not removing it" >&2
    fi
    exit "$status"
}
trap cleanup EXIT INT TERM

debootstrap --variant=minbase "$SUITE" "$chroot_dir" "$MIRROR" >"$chroot_dir.log" 2>&1 \
    || { tail -n 20 "$chroot_dir.log" >&2; die "debootstrap"; }
rm -f "$chroot_dir.log"
phase "debootstrap --variant=minbase $SUITE"

mount -t proc proc "$chroot_dir/proc"
mount --bind /dev "$chroot_dir/dev"
mount --bind /dev/pts "$chroot_dir/dev/pts" 2>/dev/null || true
mount -t sysfs sysfs "$chroot_dir/sys" 2>/dev/null || mount --rbind /sys "$chroot_dir/sys"
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf" 2>/dev/null || true
cp "$deb" "$chroot_dir/tmp/"
in_chroot() { chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
                  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

in_chroot apt-get update -qq
in_chroot apt-get install -y -qq --no-install-recommends systemd >/dev/null
phase "systemd installed in the chroot (not running)"

in_chroot apt-get install -y -q --no-install-recommends "/tmp/$(basename "$deb")" \
    | grep -E '^(Setting up edgetune|The following NEW|Need to get|After this)' || true
in_chroot dpkg -s edgetune | grep -q '^Status: install ok installed' || die "edgetune is not installed"
phase "apt-get install ./$(basename "$deb")"

run() {  # run a command in the chroot, echo it, fail the test if it fails
    echo "test-deb: \$ $*"
    in_chroot "$@" || die "$* (exit $?)"
}
has_command() {  # whether this build of edgetune has the (sub)command "$1 [$2]"
    in_chroot edgetune "$@" --help >/dev/null 2>&1
}
optional() {  # like run, for an edgetune subcommand ($2) the agent may not have yet
    if has_command "$2"; then
        run "$@"
    else
        echo "test-deb: SKIPPED (not in this build): $*"
        skipped+=("$*")
    fi
}

run edgetune --version
run edgetune probe --no-bandwidth
optional edgetune status
optional edgetune status --json
if has_command hook post-update; then
    run runuser -u edgetune -- edgetune hook post-update
    # Root (an updater) acts as the service user: every file of the store stays edgetune's.
    run edgetune hook post-update
    run edgetune status
    run sh -c 'test -z "$(find /var/lib/edgetune ! -user edgetune)"'
    # The model strategy with the package's llama.cpp build: a warning would mean a fallback.
    run sh -c 'edgetune tune gemv --shape small >/tmp/tune.out 2>&1; s=$?; cat /tmp/tune.out; [ $s = 0 ] && ! grep -q "^warning:" /tmp/tune.out'
    run sh -c 'test -z "$(find /var/lib/edgetune ! -user edgetune)"'
    run /usr/share/edgetune/hooks/edgetune-post-update
    run /usr/share/edgetune/hooks/rauc/post-install
    run /usr/share/edgetune/hooks/swupdate/postupdate.sh
    run env EDGETUNE_HOOK_STATE_DIR=/tmp/hooks /usr/share/edgetune/hooks/mender/ArtifactCommit_Leave_50_edgetune
else
    echo "test-deb: SKIPPED (not in this build): runuser -u edgetune -- edgetune hook post-update"
    skipped+=("edgetune hook post-update")
fi
phase "edgetune commands"

# What the package put in place.
run test -L /usr/bin/edgetune
run test -x /opt/edgetune/venv/bin/edgetune
run test -f /opt/edgetune/venv/share/edgetune/models/edgetune-student-q4_0.gguf
run test ! -e /opt/edgetune/venv/share/edgetune/models/edgetune-teacher-q8_0.gguf
run test -d /opt/edgetune/venv/share/edgetune/profiles/workloads
run getent passwd edgetune
run test -L /etc/systemd/system/multi-user.target.wants/edgetune.service
run test -L /etc/systemd/system/sysinit.target.wants/edgetune-update.service
run systemd-analyze verify --man=no /lib/systemd/system/edgetune.service /lib/systemd/system/edgetune-update.service
for unit in edgetune.service edgetune-update.service; do
    in_chroot systemd-analyze security --offline=yes --no-pager "/lib/systemd/system/$unit" \
        | grep 'Overall exposure level' || die "systemd-analyze security $unit"
done
if grep -rlaF /tmp/edgetune-deb. "$chroot_dir/opt/edgetune" >/dev/null; then
    die "a staging path of the build is left in /opt/edgetune"
fi

if has_command daemon; then
    echo "test-deb: \$ runuser -u edgetune -- edgetune daemon (SIGTERM after 10 s)"
    set +e
    in_chroot runuser -u edgetune -- timeout --preserve-status -s TERM -k 30 10 edgetune daemon >/dev/null 2>&1
    status=$?
    set -e
    [ "$status" = 0 ] || die "edgetune daemon exited $status after SIGTERM"
else
    echo "test-deb: SKIPPED (not in this build): edgetune daemon"
    skipped+=("edgetune daemon")
fi
phase "package contents, units and the daemon"

in_chroot apt-get purge -y -qq edgetune >/dev/null
in_chroot sh -c '! getent passwd edgetune && [ ! -e /opt/edgetune/venv ] && [ ! -e /var/lib/edgetune ] && [ ! -e /etc/edgetune ]' \
    || die "purge left the user, /opt/edgetune/venv, /var/lib/edgetune or /etc/edgetune behind"
phase "apt-get purge edgetune"

echo "test-deb: total $(( $(date +%s) - started ))s; package $(stat -c %s "$deb") bytes"
if [ "${#skipped[@]}" -gt 0 ]; then
    printf 'test-deb: skipped: %s\n' "${skipped[@]}"
    [ "${REQUIRE_ALL:-0}" = 1 ] && die "REQUIRE_ALL=1 and some commands are not in this build"
fi
echo "test-deb: OK"
