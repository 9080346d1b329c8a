#!/bin/sh
# batch-map's start task: unpacks the user's application on a Batch node, for its commands ($TOPN_APP).
# Usage: install-map-app.sh FILE VERSION. A wheel or .zip is unpacked with python3's zipfile, a .tar, .tar.gz
# or .tgz with tar; any other file is copied as it is (a script, a binary). Safe to run again, as nodes do
# after a reboot: each version lives in its own folder.
set -eu
file=$1
version=$2
shared=${AZ_BATCH_NODE_SHARED_DIR:?install-map-app.sh runs as an Azure Batch start task}
target="$shared/topn-map-app/$version"
tmp="$target.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
case "$file" in
    *.whl|*.zip) python3 -m zipfile -e "$file" "$tmp" ;;
    *.tar|*.tar.gz|*.tgz) tar -xf "$file" -C "$tmp" ;;
    *) cp "$file" "$tmp/" && chmod +x "$tmp/$(basename "$file")" ;;
esac
rm -rf "$target"
mv "$tmp" "$target"
echo "installed $(basename "$file") ($version) in $target"
