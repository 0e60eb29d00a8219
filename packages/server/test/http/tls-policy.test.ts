import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, runCommand } from '../../../../test/support/processes.ts';
import { setupGatewayFactory } from '../gateway/fixtures.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * Every listener keeps one TLS policy (src/http/tls-policy.ts): TLS 1.2 with ECDHE + AEAD
 * suites only, TLS 1.3 as it is. openssl s_client plays a client that offers one suite or one
 * version at a time; a refusal must come from the server (its alert), not from the client's
 * own security level, so the refused offers lower the client's level to 0.
 */
describe('TLS policy on every listener (openssl s_client)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let plain: TestService;
  let tlsApi: TestService;
  const listeners: Record<string, string> = {};

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-tls-policy-'));
    const [cert, key] = [join(work, 'api.pem'), join(work, 'api.key')];
    const made = await runCommand('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      '/CN=localhost',
      '-days',
      '2',
    ]);
    expect(made.status, made.stderr).toBe(0);
    plain = await startTestService('sqlite');
    await setupGatewayFactory(plain, 'demo');
    tlsApi = await startTestService('sqlite', { api: { listen: '127.0.0.1:0', tls: { cert, key } } });
    listeners.api = new URL(tlsApi.url).host;
    listeners['device-link'] = plain.service.addresses.deviceLink!;
    listeners.gateway = plain.service.addresses.gateway!;
  });
  afterAll(async () => {
    await plain?.stop();
    await tlsApi?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const sClient = (address: string, args: string[]) =>
    runCommand('openssl', ['s_client', '-connect', address, '-servername', 'localhost', '-brief', ...args], {
      timeoutMs: 30_000,
    });

  for (const name of ['api', 'device-link', 'gateway']) {
    describe(name, () => {
      it('connects with TLS 1.2 ECDHE + AES-GCM and ChaCha20-Poly1305, and with TLS 1.3', async () => {
        for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
          const res = await sClient(listeners[name]!, ['-tls1_2', '-cipher', cipher]);
          expect(res.stderr, cipher).toContain('Protocol version: TLSv1.2');
          expect(res.stderr, cipher).toContain(`Ciphersuite: ${cipher}`);
        }
        const v13 = await sClient(listeners[name]!, ['-tls1_3']);
        expect(v13.stderr).toContain('Protocol version: TLSv1.3');
      });

      it('refuses CBC, SHA-1 and CCM8 suites on TLS 1.2', async () => {
        for (const cipher of [
          'ECDHE-ECDSA-AES128-SHA',
          'ECDHE-ECDSA-AES256-SHA384',
          'ECDHE-ECDSA-AES128-SHA256',
          'ECDHE-ECDSA-AES128-CCM8',
          'ECDHE-ECDSA-AES128-CCM',
        ]) {
          const res = await sClient(listeners[name]!, ['-tls1_2', '-cipher', `${cipher}:@SECLEVEL=0`]);
          expect(res.status, cipher).not.toBe(0);
          expect(res.stderr, cipher).toMatch(/alert handshake failure/);
          expect(res.stderr, cipher).not.toContain('Ciphersuite:');
        }
      });

      it('refuses TLS 1.1 and TLS 1.0', async () => {
        for (const version of ['-tls1_1', '-tls1']) {
          const res = await sClient(listeners[name]!, [version, '-cipher', 'DEFAULT:@SECLEVEL=0']);
          expect(res.status, version).not.toBe(0);
          expect(res.stderr, version).toMatch(/alert protocol version/);
        }
      });
    });
  }
});
