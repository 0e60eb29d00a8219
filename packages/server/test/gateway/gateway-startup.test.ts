import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, startKeyferryd } from '../../../../test/support/processes.ts';
import { createSofthsmEnv, initTestToken } from '../../../../test/support/softhsm.ts';
import { startGateway } from '../../src/gateway/listener.ts';
import { startTestService } from '../support/service.ts';

describe('device gateway start-up', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('keyferryd binds the gateway, prints it and names it in listen.json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keyferry-gw-start-'));
    dirs.push(dir);
    const daemon = await startKeyferryd(dir);
    try {
      expect(daemon.listen.gateway).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(daemon.listen.gateway).not.toBe(daemon.listen.deviceLink);
      expect(JSON.parse(readFileSync(join(dir, 'listen.json'), 'utf8')).gateway).toBe(daemon.listen.gateway);
      // main prints the addresses just after startService wrote listen.json.
      while (!daemon.stdout().includes('Device gateway:')) await new Promise((r) => setTimeout(r, 20));
      expect(daemon.stdout()).toContain(`Device gateway: ${daemon.listen.gateway}\n`);
    } finally {
      await daemon.stop();
    }
  });

  it('with pkcs11 key custody it runs without a gateway and says why', async () => {
    const hsm = createSofthsmEnv();
    const token = initTestToken(hsm.conf, { label: 'keyferryd', userPin: '4321' });
    const svc = await startTestService('sqlite', {
      keyCustody: { kind: 'pkcs11', module: hsm.module, tokenLabel: token.label, pin: token.userPin },
    });
    try {
      expect(svc.service.addresses.gateway).toBeUndefined();
      expect(JSON.parse(readFileSync(join(svc.dataDir, 'listen.json'), 'utf8')).gateway).toBeUndefined();
      let logged = '';
      const log = pino(
        { level: 'warn' },
        new Writable({
          write(chunk, _enc, done) {
            logged += chunk;
            done();
          },
        }),
      );
      expect(await startGateway(svc.service.ctx, { log, listen: '127.0.0.1:0' })).toBeUndefined();
      expect(JSON.parse(logged).msg).toContain('Node TLS servers cannot sign with a PKCS#11 key');
    } finally {
      await svc.stop();
      hsm.cleanup();
    }
  });
});
