export { loadConfig, validateConfig } from './config/load.ts';
export type { Config } from './config/schema.ts';
export { type RunningService, startService } from './service.ts';
