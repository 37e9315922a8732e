#!/usr/bin/env bash
# Build dist/edgetune_<version>_<arch>.deb (make deb).
#
# The package holds a self-contained virtual environment at /opt/edgetune/venv, made with
# Debian's own /usr/bin/python3 (3.11 on bookworm: the target has that interpreter, not a
# pyenv one) and edgetune installed into it non-editable, without extras. The venv is built
# in a staging tree and then made to work at /opt/edgetune/venv: shebangs and any other
# absolute staging paths are rewritten, bytecode is compiled again deterministically with
# the final paths, and the build fails if the staging path is left anywhere in the tree.
#
# Environment: PYTHON (default /usr/bin/python3), DIST (default dist), CMAKE_ARGS (passed to
# a llama-cpp-python source build, if pip's wheel cache cannot supply the wheel),
# LLAMA_PORTABLE (default 1: build llama.cpp for any CPU of the architecture; 0 reuses pip's
# cached wheel, made for this machine's CPU: see below), LLAMA_WHEEL (a llama-cpp-python wheel
# that an earlier portable build made, installed instead of building it again),
# SOURCE_DATE_EPOCH (file times in the package; default: the last commit's time).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
DIST=${DIST:-$ROOT/dist}
PREFIX=/opt/edgetune/venv
export CMAKE_ARGS=${CMAKE_ARGS:--DLLAVA_BUILD=OFF}
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)

die() { echo "build-deb: $*" >&2; exit 1; }

for tool in dpkg-deb dpkg "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$pyver" = 3.11 ] || die "$PYTHON is Python $pyver; the package's Depends name python3 3.11 (Debian 12)"
"$PYTHON" -c 'import ensurepip' 2>/dev/null || die "$PYTHON cannot make a venv: apt-get install python3-venv"

version=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
          "$ROOT/pyproject.toml")
arch=$(dpkg --print-architecture)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

work=$(mktemp -d "${TMPDIR:-/tmp}/edgetune-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root
venv=$stage$PREFIX
echo "build-deb: edgetune $version ($arch), staging in $stage"

# 1. The venv and edgetune in it (from a copy of the source, so the build leaves no
#    build/ or *.egg-info behind in the checkout).
mkdir -p "$work/src"
tar -C "$ROOT" --exclude=./.venv --exclude=./.git --exclude=./dist --exclude=./build \
    --exclude='*.egg-info' --exclude=./models --exclude=./benchmarks -cf - . | tar -C "$work/src" -xf -
"$PYTHON" -m venv "$venv"
# LLAMA_PORTABLE=1 (the default) builds llama.cpp from source for every CPU of this
# architecture, fast on each: GGML_BACKEND_DL with GGML_CPU_ALL_VARIANTS builds one CPU library
# per level (on x86-64: SSE4.2, AVX, AVX2 (haswell), AVX-512 (skylakex, icelake, zen4), AMX ...),
# installed beside libllama, and at run time ggml loads the one that scores best on the device's
# processor (agent.predict.local_model.load_cpu_backend). This replaces pip's cached wheel, which
# a GGML_NATIVE build made for the build machine's CPU alone (it dies with SIGILL on an older
# one). About 20 minutes on two cores; pip's wheel cache is neither read nor written.
pip_args=()
if [ -n "${LLAMA_WHEEL:-}" ]; then
    [ -f "$LLAMA_WHEEL" ] || die "LLAMA_WHEEL=$LLAMA_WHEEL is not a file"
    "$venv/bin/python" -m pip install --quiet --no-compile --no-deps "$LLAMA_WHEEL"
elif [ "${LLAMA_PORTABLE:-1}" = 1 ]; then
    export CMAKE_ARGS="$CMAKE_ARGS -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
    export CMAKE_ARGS="$CMAKE_ARGS -DCMAKE_INSTALL_BINDIR=llama_cpp/lib"  # the variants beside libllama
    pip_args=(--no-cache-dir --no-binary llama-cpp-python)
fi
"$venv/bin/python" -m pip install --quiet --no-compile "${pip_args[@]}" "$work/src" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
# pip and setuptools are not needed on the device (nothing imports pkg_resources).
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools
rm -f "$venv"/bin/pip* "$venv"/bin/activate.csh "$venv"/bin/activate.fish "$venv"/bin/Activate.ps1
# The source path of the build is of no use on the device.
find "$venv/lib" -path '*/edgetune-*.dist-info/direct_url.json' -delete

# 2. Shipped data: only what the device needs from models/, and profiles/.
share=$venv/share/edgetune
install -d "$share/models"
for f in edgetune-student-q4_0.gguf edgetune-cost.onnx confidence.json reuse.json.gz policy.json vocab.json metrics.json README.md; do
    install -m 0644 "$ROOT/models/$f" "$share/models/$f"
done
cp -r "$ROOT/profiles" "$share/profiles"

# 3. Make the venv work at $PREFIX: rewrite text files naming the staging path.
{ grep -rlI --null -F "$stage" "$venv" || true; } | xargs -0 -r sed -i "s|$stage||g"
# Bytecode: drop pip's (it names the staging path and carries mtimes), compile again
# with the final paths and hash-based invalidation (reproducible, valid on a read-only /opt).
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$venv" -name '*.py[co]' -delete
"$venv/bin/python" -m compileall -q -j 0 --invalidation-mode checked-hash -s "$stage" -p / \
    "$venv/lib" >/dev/null
if grep -rlaF "$stage" "$stage"; then
    die "the staging path is still named in the files above"
fi
# llama-cpp-python's wheel (built here) cannot hold symbolic links, so each library is there
# three times (libX.so, libX.so.0, libX.so.0.N.M), and its CMake install left a second copy
# with headers in site-packages/lib and site-packages/include, which nothing loads
# (llama_cpp loads llama_cpp/lib/, RUNPATH $ORIGIN). Link the copies, drop the leftovers.
site=$venv/lib/python$pyver/site-packages
records=("$site"/llama_cpp_python-*.dist-info/RECORD)
record=${records[0]}
for leftover in lib include; do
    [ -d "$site/$leftover" ] || continue
    foreign=$(find "$site/$leftover" -type f | sed "s|^$site/||" | grep -vxFf <(cut -d, -f1 "$record") || true)
    if [ -n "$foreign" ]; then
        echo "build-deb: keeping $site/$leftover: not all of it is llama-cpp-python's"
    else
        rm -rf "${site:?}/$leftover"
    fi
done
for lib in "$site"/llama_cpp/lib/lib*.so; do
    [ -f "$lib" ] || continue
    real=
    for candidate in "$lib".*.*.*; do
        [ -f "$candidate" ] && [ ! -L "$candidate" ] && real=$candidate
    done
    [ -n "$real" ] || continue
    for copy in "$lib" "$lib".[0-9]; do
        if [ -f "$copy" ] && [ ! -L "$copy" ] && cmp -s "$copy" "$real"; then
            ln -sf "$(basename "$real")" "$copy"
        fi
    done
done
# Debug symbols of the locally built llama.cpp (wheels from PyPI are already stripped, and
# stripping their patchelf-edited libraries is not safe, so only llama_cpp's own).
if command -v strip >/dev/null; then
    find "$site/llama_cpp" -name '*.so*' -type f -exec strip --strip-unneeded {} +
fi

# 4. Units, config, hooks, the command on PATH.
P=$ROOT/packaging
install -D -m 0644 "$P/edgetune.service" "$stage/lib/systemd/system/edgetune.service"
install -D -m 0644 "$P/edgetune-update.service" "$stage/lib/systemd/system/edgetune-update.service"
install -D -m 0644 "$P/config.toml" "$stage/etc/edgetune/config.toml"
hooks=$stage/usr/share/edgetune/hooks
install -D -m 0755 "$P/hooks/edgetune-post-update" "$hooks/edgetune-post-update"
install -D -m 0755 "$P/hooks/mender/ArtifactCommit_Leave_50_edgetune" "$hooks/mender/ArtifactCommit_Leave_50_edgetune"
install -D -m 0755 "$P/hooks/rauc/post-install" "$hooks/rauc/post-install"
install -D -m 0755 "$P/hooks/swupdate/postupdate.sh" "$hooks/swupdate/postupdate.sh"
install -D -m 0644 "$P/README.md" "$stage/usr/share/doc/edgetune/README.packaging.md"
install -d "$stage/usr/bin"
ln -s "$PREFIX/bin/edgetune" "$stage/usr/bin/edgetune"

# 5. DEBIAN/.
install -d "$stage/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$P/debian/$script" "$stage/DEBIAN/$script"
done
echo /etc/edgetune/config.toml > "$stage/DEBIAN/conffiles"
size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    "$P/debian/control.in" > "$stage/DEBIAN/control"

find "$stage" -depth -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0 -r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
mkdir -p "$DIST"
deb=$DIST/edgetune_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "build-deb: $deb $(du -h "$deb" | cut -f1) (installed ${size} KiB) in $(( $(date +%s) - start ))s"
