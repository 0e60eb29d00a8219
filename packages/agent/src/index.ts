/** keyferry-agent: the device side (secure element port, device-link client, auto-register). */
export { AgentError, type AgentErrorKind, EXIT_CODES } from './agent-error.ts';
export { DeviceLinkClient } from './device-link/client.ts';
export type { Log } from './log.ts';
export { registerOnce } from './register/auto-register.ts';
export { type RenewOptions, type RenewSummary, renewalDueAt, renewOnce } from './rotate/rotate.ts';
export { openSecureElement } from './se/open.ts';
export * from './se/port.ts';
export {
  type AgentSettings,
  agentSettings,
  type SettingSource,
  seSettings,
  settingSource,
} from './settings/settings.ts';
export { renderSotaToml, writeSotaToml } from './sota-toml.ts';
