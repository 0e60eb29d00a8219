export * from './device-id.ts';
export * from './device-id-file.ts';
export * from './errors.ts';
export * from './x509/index.ts';
