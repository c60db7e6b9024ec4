#!/usr/bin/env bash
# Mount a demo pool of three branch directories, put files in it, show where
# each landed. Leaves the pool mounted and prints how to unmount it.
set -euo pipefail
MERGERFS=${MERGERFS:-mergerfs}
base=$(mktemp -d /tmp/mergerfs-demo.XXXXXX)
mkdir -p "$base"/disk1 "$base"/disk2 "$base"/disk3 "$base"/pool
# Something already on a disk, as on a real NAS: the pool shows it merged.
mkdir -p "$base"/disk2/photos && echo "from disk2" > "$base"/disk2/photos/old.jpg

# The default create policy (pfrd) spreads new files over the disks by free space.
"$MERGERFS" -o minfreespace=1M,fsname=demo \
    "$base/disk1:$base/disk2:$base/disk3" "$base/pool"
echo "mounted pool: $base/pool  (branches: $base/disk{1,2,3})"
grep " $base/pool " /proc/mounts

pool=$base/pool
echo "hello" > "$pool"/hello.txt
mkdir -p "$pool"/music/albums
for i in 1 2 3; do head -c $((i * 4096)) /dev/urandom > "$pool/music/albums/track$i.flac"; done
echo "new" > "$pool"/photos/new.jpg

echo
echo "the pool:"
(cd "$pool" && find . -mindepth 1 | sort | sed 's/^/  /')
echo
echo "where each file landed:"
(cd "$pool" && find . -type f | sort) | while read -r f; do
    echo "  ${f#./} -> $(getfattr --only-values -n user.mergerfs.basepath "$pool/$f" 2>/dev/null)"
done
echo
echo "runtime control: getfattr -d -m user.mergerfs. $pool/.mergerfs"
echo "unmount with:    fusermount -u $pool"
