#!/usr/bin/env bash
# Unpacks the uapi headers of Debian's linux-source-6.12 (the guest's kernel
# series) into .cache/linux-6.12/include/uapi, for the tests that compile C
# against <linux/pci_regs.h>. ../shared/uapi holds only vfio.h and iommufd.h.
# Prints the directory. Needs apt (root) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/linux-6.12
if [ ! -f "$out/include/uapi/linux/pci_regs.h" ]; then
  tarball=$(ls /usr/src/linux-source-6.12.tar.* 2>/dev/null | head -n 1 || true)
  if [ -z "$tarball" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends linux-source-6.12 >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends linux-source-6.12 >/dev/null; }
    tarball=$(ls /usr/src/linux-source-6.12.tar.* | head -n 1)
  fi
  mkdir -p "$out"
  tar -xf "$tarball" -C "$out" --strip-components=1 --wildcards 'linux-source-6.12/include/uapi/*'
fi
echo "$PWD/$out/include/uapi"
