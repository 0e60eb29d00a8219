import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentError, EXIT_CODES } from '../src/agent-error.ts';
import { agentSettings, DEFAULTS, settingSource } from '../src/settings/settings.ts';

const dist = join(import.meta.dirname, '..', 'dist-files');

describe('dist-files', () => {
  it('the unit runs auto-register once per boot until aktualizr-lite has registered', () => {
    const unit = readFileSync(join(dist, 'keyferry-agent.service'), 'utf8');
    for (const line of [
      'ConditionPathExists=!/var/sota/sql.db',
      'After=network-online.target time-sync.target',
      'Wants=network-online.target time-sync.target',
      'EnvironmentFile=-/etc/default/lmp-el2go-auto-register',
      'ExecStart=/usr/bin/keyferry-agent auto-register',
      'Restart=on-failure',
    ]) {
      expect(unit.split('\n')).toContain(line);
    }
    // Not allow-listed and plan limits are restarted; every other failure code is not.
    const prevented = /^RestartPreventExitStatus=(.*)$/m.exec(unit)?.[1]?.split(' ').map(Number) ?? [];
    const restarted = ['not_allowlisted', 'plan_limit', 'transient'] as const;
    const needDeviceChange = [
      'internal',
      'usage',
      'env_file_missing',
      'setting_invalid',
      'file_unreadable',
      'se_module',
      'se_token',
      'se_pin',
      'se_no_identity',
      'se_foreign_key',
      'se_full',
      'se_error',
      'server_untrusted',
      'sota_write',
      'refused',
      'aklite_start',
    ] as const;
    for (const kind of restarted) expect(prevented, kind).not.toContain(EXIT_CODES[kind]);
    for (const kind of needDeviceChange) expect(prevented, kind).toContain(EXIT_CODES[kind]);
  });

  it('default.env parses, needs only REPOID and EL2GO_HOSTNAME, and states the defaults', () => {
    const file = join(dist, 'default.env');
    let refused: unknown;
    try {
      agentSettings(settingSource(file, {}, true));
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(AgentError);
    expect((refused as AgentError).message).toMatch(/^REPOID is not set/);
    const source = settingSource(file, { REPOID: 'r', EL2GO_HOSTNAME: 's.device-link.localhost' }, true);
    const settings = agentSettings(source);
    expect(settings.sotaDir).toBe(DEFAULTS.SOTA_DIR);
    for (const [name, value] of Object.entries(DEFAULTS)) {
      const stated = source.get(name);
      if (stated !== undefined) expect(stated, name).toBe(value);
    }
  });
});
