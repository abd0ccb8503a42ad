/**
 * Cleanup that runs every step even when one fails, then reports what
 * failed: closing a device, group, container or iommufd, opening an
 * interrupt gate, cleaning up after a migration. A half-run cleanup would
 * leak the fds and mappings of the steps it skipped.
 */

/** Runs `step`, adding what it throws to `errors`. */
export function attempt(errors: unknown[], step: () => void): void {
  try {
    step();
  } catch (e) {
    errors.push(e);
  }
}

/** Throws the one error collected, or all of them together as an AggregateError with `message`. */
export function throwCollected(errors: readonly unknown[], message: string): void {
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, message);
}
