import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildScript, extractSteps, REPO_ROOT, WALKTHROUGH } from '../../scripts/walkthrough.ts';
import { PROGRAM_TIMEOUT_MS, runCommand } from '../support/processes.ts';

/** One whole demo: keyferryd, a PKI, three devices, each run a few dozen programs (minutes when busy). */
const DEMO_TIMEOUT_MS = 900_000;

/**
 * Issue 7's acceptance: the walkthrough's commands, extracted from docs/walkthrough.md, run
 * verbatim — through `npm run demo`, which is what a newcomer runs — for three simulated
 * devices against a real keyferryd, real SoftHSM2 tokens, real TLS and curl.
 */
describe('docs/walkthrough.md', () => {
  const steps = extractSteps(readFileSync(WALKTHROUGH, 'utf8'));

  it('holds the guide flow as runnable commands', () => {
    const commands = steps.map((s) => s.command);
    for (const expected of [
      'keyferry keys ca create pki',
      'keyferry el2g config-device-gateway --pki-dir pki',
      'keyferry el2g status',
      'keyferry el2g devices add 935389312472 0x$DEVICE_UID',
      'keyferry-agent auto-register --once --env-file $DEVICE/default.env',
      'keyferry el2g devices show 0x$DEVICE_UID',
      'keyferry devices list',
    ]) {
      expect(commands).toContain(expected);
    }
    const heredoc = steps.find((s) => s.command.startsWith('cat > $DEVICE/default.env'));
    expect(heredoc?.command.split('\n').at(-1)).toBe('EOF');
    expect(buildScript(steps, 3).match(/^export DEVICE=device\d$/gm)).toEqual([
      'export DEVICE=device1',
      'export DEVICE=device2',
      'export DEVICE=device3',
    ]);
  });

  it.each([
    ['SoftHSM2 tokens', 'pkcs11', /^Secure elements: SoftHSM2 tokens/m],
    ['soft secure elements', 'soft', /^Secure elements: soft \(directories\)/m],
  ])(
    'runs end to end as `npm run demo` with %s: three devices provisioned, three gateway calls',
    { timeout: DEMO_TIMEOUT_MS + PROGRAM_TIMEOUT_MS },
    async (_name, se, says) => {
      const res = await runCommand(
        process.execPath,
        [join(REPO_ROOT, 'node_modules/tsx/dist/cli.mjs'), 'scripts/demo.ts'],
        {
          timeoutMs: DEMO_TIMEOUT_MS,
          env: { ...process.env, KEYFERRY_DEBUG: '', KEYFERRY_DEMO_SE: se as string },
        },
      );
      const out = res.stdout + res.stderr;
      expect(
        res.signal,
        `the demo did not finish within ${DEMO_TIMEOUT_MS} ms:\n${out.slice(-3000)}`,
      ).toBeNull();
      expect(out).toMatch(says as RegExp);
      expect(out, out.slice(-3000)).toContain('Demo complete; scratch directory removed.');
      expect(res.status).toBe(0);
      const gatewayCalls = [...out.matchAll(/^\{"name":"([0-9a-f]{36})","factory":"demo"/gm)].map(
        (m) => m[1],
      );
      expect(new Set(gatewayCalls).size).toBe(3);
      expect(out.match(/fio-device-gateway-ca\s+CERTIFICATE\s+PROVISIONING_COMPLETED/g)).toHaveLength(3);
      expect(out.match(/fio-device-gateway-ca-kp\s+KEYPAIR\s+PROVISIONING_COMPLETED/g)).toHaveLength(3);
      expect(out).toMatch(/fio-device-gateway-ca\.pem: OK/);
      const registry = out.slice(out.lastIndexOf('host:~$ keyferry devices list'));
      for (const uid of gatewayCalls) expect(registry).toContain(uid as string);
    },
  );
});
