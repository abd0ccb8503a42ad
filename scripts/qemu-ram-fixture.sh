#!/usr/bin/env bash
# Writes test/fixtures/qemu-7.2-ram.savevm: a real QEMU's migration stream of
# a guest with 16 MiB of RAM and no devices (`-M none`), its RAM filled by two
# generic loaders, for test/qemu-ram-interop.test.ts. The blobs are the ones
# that test rebuilds: 20000 bytes of (i*7 + (i>>8)) & 0xff at 0x3000, and a
# page of 0xab at 0x800000. Needs qemu-system-x86_64 (Debian's 7.2).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -c "import sys; sys.stdout.buffer.write(bytes(((i*7 + (i>>8)) & 0xff) for i in range(20000)))" > "$tmp/a.bin"
python3 -c "import sys; sys.stdout.buffer.write(b'\xab' * 4096)" > "$tmp/b.bin"
{
  sleep 1
  echo "migrate \"exec:cat > $tmp/out.savevm\""
  sleep 3
  echo quit
} | qemu-system-x86_64 -M none -m 16M -nodefaults -display none -S -monitor stdio \
  -device "loader,file=$tmp/a.bin,addr=0x3000,force-raw=on" \
  -device "loader,file=$tmp/b.bin,addr=0x800000,force-raw=on" >/dev/null
cp "$tmp/out.savevm" test/fixtures/qemu-7.2-ram.savevm
qemu-system-x86_64 --version | head -n 1
