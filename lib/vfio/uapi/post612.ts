/**
 * uAPI additions after Linux 6.12, absent from the checked header
 * (`../shared/uapi`). Kept apart so the layout test does not look for them.
 */

/** Mainline after 6.12: export a device region as a dma-buf. */
export const VFIO_DEVICE_FEATURE_DMA_BUF = 11;
/** 2026 series (Yishai Hadas): opt in to `vfio_precopy_info.flags` being meaningful. */
export const VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 = 12;
/** With the v2 opt-in: new initial data; `initial_bytes` replaces the old value and `dirty_bytes` restarts at 0. */
export const VFIO_PRECOPY_INFO_REINIT = 1 << 0;
