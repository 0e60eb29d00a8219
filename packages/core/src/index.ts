export * from './device-id.ts';
export * from './device-id-file.ts';
export * from './duration.ts';
export * from './errors.ts';
export * from './loopback.ts';
export * from './program/atomic-file.ts';
export * from './program/closed-output.ts';
export * from './x509/index.ts';
