import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentError } from '../src/agent-error.ts';
import { agentSettings, DEFAULTS, settingSource } from '../src/settings/settings.ts';

const dist = join(import.meta.dirname, '..', 'dist-files');

describe('dist-files', () => {
  it("the unit is LmP's: once per boot until aktualizr-lite has registered, no Restart=, not a oneshot", () => {
    const unit = readFileSync(join(dist, 'keyferry-agent.service'), 'utf8');
    const lines = unit.split('\n');
    for (const line of [
      'ConditionPathExists=!/var/sota/sql.db',
      'After=network-online.target time-sync.target systemd-time-wait-sync.service',
      'Wants=network-online.target time-sync.target systemd-time-wait-sync.service',
      'EnvironmentFile=-/etc/default/lmp-el2go-auto-register',
      'ExecStart=/usr/bin/keyferry-agent auto-register',
    ]) {
      expect(lines).toContain(line);
    }
    // The agent waits for the allow-list itself; a oneshot would hold up multi-user.target meanwhile.
    expect(unit).not.toMatch(/^(Restart|RestartSec|RestartPreventExitStatus|Type)=/m);
  });

  it('the renew timer starts a oneshot `renew --once` at a randomised time, after provisioning', () => {
    const service = readFileSync(join(dist, 'keyferry-agent-renew.service'), 'utf8').split('\n');
    for (const line of [
      'Type=oneshot',
      'ConditionPathExists=/var/sota/sota.toml',
      'EnvironmentFile=-/etc/default/lmp-el2go-auto-register',
      'ExecStart=/usr/bin/keyferry-agent renew --once',
    ]) {
      expect(service).toContain(line);
    }
    const timer = readFileSync(join(dist, 'keyferry-agent-renew.timer'), 'utf8').split('\n');
    for (const line of ['RandomizedDelaySec=12h', 'Persistent=true', 'WantedBy=timers.target']) {
      expect(timer).toContain(line);
    }
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
