/** The VFIO and iommufd uAPI: constants, request numbers, struct layouts and codecs. */
export * from './constants.js';
export * from './ioctls.js';
export * from './layout.js';
export * from './structs.js';
export * from './caps.js';
export * from './info.js';
export * from './irq-set.js';
export * from './feature.js';
export * from './post612.js';
export * from './extensions.js';
export * as iommufd from './iommufd.js';
