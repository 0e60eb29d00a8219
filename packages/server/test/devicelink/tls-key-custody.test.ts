import { createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPem, parseCertificate } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, runCommand } from '../../../../test/support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../../test/support/softhsm.ts';
import { validateConfig } from '../../src/config/load.ts';
import type { ConfigInput } from '../../src/config/schema.ts';
import {
  DEVICE_LINK_CERT_FILE,
  DEVICE_LINK_KEY_FILE,
  deviceLinkTls,
  SERVICE_CA_FILE,
  SERVICE_CA_KEY_FILE,
} from '../../src/devicelink/tls-material.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * The device-link's own TLS keys (its service CA and server key) kept in the TLS key store
 * with `deviceLink.tlsKeys: custody` — soft custody, and the soft store beside pkcs11 custody —
 * or in the files `deviceLink.tls` names. openssl s_client checks what the listener presents.
 */
describe('device-link TLS keys in custody or in named files', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let hsm: SofthsmEnv;
  const PIN = '2468';
  const running: TestService[] = [];
  let work: string;

  beforeAll(() => {
    // SoftHSM reads its config when the module is first initialised: before any service starts
    hsm = createSofthsmEnv();
    initTestToken(hsm.conf, { label: 'dl-custody', userPin: PIN });
    work = mkdtempSync(join(tmpdir(), 'keyferry-dl-keys-'));
  });
  afterAll(async () => {
    for (const svc of running) await svc.stop();
    hsm?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  const start = async (overrides: ConfigInput) => {
    const svc = await startTestService('sqlite', overrides);
    running.push(svc);
    return svc;
  };
  const spkiOf = (pem: string) => Buffer.from(parseCertificate(fromPem(pem, 'CERTIFICATE')).spki);
  /** The listener's certificate as openssl sees it, verified against `caFile`. */
  const presented = async (svc: TestService, caFile: string) => {
    const res = await runCommand(
      'openssl',
      [
        's_client',
        '-connect',
        svc.service.addresses.deviceLink!,
        '-servername',
        'localhost',
        '-CAfile',
        caFile,
        '-verify_return_error',
        '-showcerts',
      ],
      { timeoutMs: 30_000 },
    );
    expect(res.stdout).toContain('Verify return code: 0 (ok)');
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(res.stdout)?.[0];
    return pem!;
  };

  for (const custody of ['soft', 'pkcs11'] as const) {
    it(`with ${custody} custody, keeps the service CA and server keys wrapped in the database, no key file`, async () => {
      const svc = await start({
        ...(custody === 'pkcs11' && {
          keyCustody: { kind: 'pkcs11', module: hsm.module, tokenLabel: 'dl-custody', pin: PIN },
        }),
        deviceLink: { listen: '127.0.0.1:0', tlsKeys: 'custody' },
      });
      const { dataDir } = svc;
      expect(existsSync(join(dataDir, SERVICE_CA_KEY_FILE))).toBe(false);
      expect(existsSync(join(dataDir, DEVICE_LINK_KEY_FILE))).toBe(false);
      expect(
        readdirSync(dataDir)
          .filter((f) => f.endsWith('.key'))
          .sort(),
      ).toEqual(['master.key']);
      const rows = await svc.service.ctx.database.db
        .selectFrom('custody_keys')
        .select(['purpose', 'backend', 'public_key'])
        .where('purpose', 'like', 'device-link-%')
        .orderBy('purpose')
        .execute();
      const certPem = readFileSync(join(dataDir, DEVICE_LINK_CERT_FILE), 'utf8');
      const caPem = readFileSync(join(dataDir, SERVICE_CA_FILE), 'utf8');
      expect(rows).toEqual([
        { purpose: 'device-link-service-ca', backend: 'soft', public_key: spkiOf(caPem).toString('base64') },
        { purpose: 'device-link-tls', backend: 'soft', public_key: spkiOf(certPem).toString('base64') },
      ]);
      // a device trusting service-ca.pem accepts what the listener presents: the certificate on file
      expect(await presented(svc, join(dataDir, SERVICE_CA_FILE))).toBe(certPem.trim());
      // the next start finds both keys again and keeps the certificate (devices keep their trust)
      const again = await deviceLinkTls(svc.service.ctx.config, {
        db: svc.service.ctx.database.db,
        tlsKeys: svc.service.ctx.tlsKeys,
      });
      expect(again.cert).toBe(certPem);
      expect(createPublicKey(again.key).export({ format: 'der', type: 'spki' })).toEqual(spkiOf(certPem));
      expect(readFileSync(join(dataDir, SERVICE_CA_FILE), 'utf8')).toBe(caPem);
      // the private keys are not in the database file in the clear
      const dbFile = readFileSync(join(dataDir, 'keyferry.db'));
      const pkcs8 = createPrivateKey(again.key).export({ format: 'der', type: 'pkcs8' });
      expect(dbFile.includes(pkcs8)).toBe(false);
      expect(dbFile.includes(Buffer.from(again.key))).toBe(false);
    });
  }

  it('serves the cert and key files deviceLink.tls names, and makes no service CA', async () => {
    const made = await start({ deviceLink: { listen: '127.0.0.1:0' } });
    const cert = join(made.dataDir, DEVICE_LINK_CERT_FILE);
    const key = join(made.dataDir, DEVICE_LINK_KEY_FILE);
    const svc = await start({ deviceLink: { listen: '127.0.0.1:0', tls: { cert, key } } });
    expect(svc.service.ctx.config.deviceLink.tlsKeys).toBe('files');
    expect(existsSync(join(svc.dataDir, SERVICE_CA_FILE))).toBe(false);
    expect(await presented(svc, join(made.dataDir, SERVICE_CA_FILE))).toBe(readFileSync(cert, 'utf8').trim());
  });

  it('refuses deviceLink.tls files together with tlsKeys: custody, naming both', () => {
    expect(() =>
      validateConfig({ deviceLink: { tls: { cert: '/c.pem', key: '/k.pem' }, tlsKeys: 'custody' } }),
    ).toThrow(/deviceLink\.tlsKeys.*deviceLink\.tls names your own files: drop one of the two/);
  });
});
