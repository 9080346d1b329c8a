#!/bin/sh
# The pool's start task: installs the topn task application on a Batch node that may have neither pip
# nor internet (a stock Ubuntu 24.04 image has python3). Usage: install-taskapp.sh WHEEL VERSION
# Safe to run again, as nodes do after a reboot: each version lives in its own folder.
set -eu
wheel=$1
version=$2
shared=${AZ_BATCH_NODE_SHARED_DIR:?install-taskapp.sh runs as an Azure Batch start task}
python=$(command -v python3 || true)
if [ -z "$python" ]; then
    echo "install-taskapp.sh: python3 is not installed on this node image; choose an image that has it" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "install-taskapp.sh: topn-taskapp needs Python 3.10 or newer; this node has $("$python" --version 2>&1)" >&2
    exit 1
fi
target="$shared/topn-taskapp/$version"
tmp="$target.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
"$python" -m zipfile -e "$wheel" "$tmp/lib"
cat > "$tmp/run" <<RUN
#!/bin/sh
PYTHONPATH="$target/lib" exec "$python" -m topn_taskapp "\$@"
RUN
chmod 755 "$tmp/run"
rm -rf "$target"
mv "$tmp" "$target"
"$target/run" --help > /dev/null
echo "installed topn-taskapp $version for $("$python" --version 2>&1)"
