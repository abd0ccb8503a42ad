/**
 * Makes the next mmap of a simulated kernel return a mapping whose munmap
 * fails with EIO (the mapping then stays in place, as after a failed
 * munmap(2)), for the tests of what a region does when unmapping fails.
 */
import { VfioSystemError } from '../../lib/errors.js';
import type { SimKernel } from '../../lib/sim/kernel.js';
import type { Mapping } from '../../lib/sys/sys.js';

/** Arms the fault; returns a function that puts the kernel's own mmap back (a no-op once the fault fired). */
export function nextMunmapFails(kernel: SimKernel): () => void {
  const mmap = kernel.mmap;
  kernel.mmap = (fd, length, prot, offset) => {
    kernel.mmap = mmap;
    const m = mmap.call(kernel, fd, length, prot, offset);
    const failing: Mapping = {
      address: m.address,
      length: m.length,
      get unmapped() {
        return m.unmapped;
      },
      view: (o, l) => m.view(o, l),
      unmap: () => {
        throw new VfioSystemError(5, 'munmap');
      },
    };
    return failing;
  };
  return () => {
    kernel.mmap = mmap;
  };
}
