/**
 * Short names of `enum vfio_device_mig_state`, for code that spells out
 * state tables and arcs (the planner, simulated drivers, tests). Internal:
 * the public names are the `VFIO_DEVICE_STATE_*` constants.
 */
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_RUNNING_P2P,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
} from '../vfio/uapi/constants.js';

export const ERROR = VFIO_DEVICE_STATE_ERROR;
export const STOP = VFIO_DEVICE_STATE_STOP;
export const RUNNING = VFIO_DEVICE_STATE_RUNNING;
export const STOP_COPY = VFIO_DEVICE_STATE_STOP_COPY;
export const RESUMING = VFIO_DEVICE_STATE_RESUMING;
export const RUNNING_P2P = VFIO_DEVICE_STATE_RUNNING_P2P;
export const PRE_COPY = VFIO_DEVICE_STATE_PRE_COPY;
export const PRE_COPY_P2P = VFIO_DEVICE_STATE_PRE_COPY_P2P;
