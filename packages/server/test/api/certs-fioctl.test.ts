import { generateKeyPairSync } from 'node:crypto';
import {
  buildCrl,
  createCsr,
  factoryRootProfile,
  fromPem,
  intermediateCaFromCsr,
  parseCertificate,
  parseCsr,
  type RevocationReason,
  type Signer,
  serialToDecimal,
  softSigner,
  splitPemBundle,
  tlsServerFromCsr,
  toPem,
} from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';

const CERTS = '/ota/factories/demo/certs/';
/** What fioctl's Go client puts on every request (client/foundries.go). */
const FIOCTL_HEADERS = { 'content-type': 'application/json' };
/** json.Marshal of fioctl's zero ChangeMeta, sent with every PATCH certs/. */
const ZERO_CHANGE_META = '"change-meta":{"created-by":"","created-at":"","updated-by":"","updated-at":""}';

const newSigner = () => softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);

/** json.Marshal of CaCreateOptions: every field, in struct order. */
function caCreateOptions(o: { init: boolean; ca: boolean; est: boolean; tls: boolean }): string {
  return `{"first-time-init":${o.init},"ca-csr":${o.ca},"est-tls-csr":${o.est},"tls-csr":${o.tls}}`;
}

/** json.Marshal of CaCerts: non-empty strings only (omitempty), in struct order, then change-meta. */
function caCerts(fields: { root?: string; ca?: string; tls?: string; crl?: string }): string {
  const parts: string[] = [];
  if (fields.root) parts.push(`"root-crt":${JSON.stringify(fields.root)}`);
  if (fields.ca) parts.push(`"ca-crt":${JSON.stringify(fields.ca)}`);
  if (fields.tls) parts.push(`"tls-crt":${JSON.stringify(fields.tls)}`);
  if (fields.crl) parts.push(`"ca-revoke-crl":${JSON.stringify(fields.crl)}`);
  parts.push(ZERO_CHANGE_META);
  return `{${parts.join(',')}}`;
}

/**
 * Checks a value against a Go type as encoding/json would decode it: a JSON type that does not
 * fit the field fails the whole decode in fioctl. Unknown fields are ignored, as Go does.
 */
type GoType = 'string' | 'string[]' | { [field: string]: GoType };
function expectGoDecodes(value: unknown, type: GoType, at = '$'): void {
  if (type === 'string') {
    expect(value === null || typeof value === 'string', `${at} must be a JSON string`).toBe(true);
  } else if (type === 'string[]') {
    expect(value === null || Array.isArray(value), `${at} must be a JSON array`).toBe(true);
    for (const [i, v] of ((value as unknown[]) ?? []).entries()) expectGoDecodes(v, 'string', `${at}[${i}]`);
  } else {
    expect(typeof value === 'object' && !Array.isArray(value), `${at} must be a JSON object`).toBe(true);
    for (const [field, fieldType] of Object.entries(type)) {
      const v = (value as Record<string, unknown> | null)?.[field];
      if (v !== undefined) expectGoDecodes(v, fieldType, `${at}.${field}`);
    }
  }
}
const CHANGE_META: GoType = {
  'created-by': 'string',
  'created-at': 'string',
  'updated-by': 'string',
  'updated-at': 'string',
};
const CA_CERTS: GoType = {
  'root-crt': 'string',
  'ca-crt': 'string',
  'est-tls-crt': 'string',
  'tls-crt': 'string',
  'ca-revoke-crl': 'string',
  'disabled-ca-serials': 'string[]',
  'change-meta': CHANGE_META,
};
const CA_CSRS: GoType = { 'ca-csr': 'string', 'est-tls-csr': 'string', 'tls-csr': 'string' };

describe.each(BACKENDS)('certs/ as fioctl v0.42 speaks it, on %s', (backend) => {
  let svc: TestService;
  let rootSigner: Signer;
  let root: Uint8Array;
  let onlinePem: string;
  let localPem: string;

  /** A request with the bytes fioctl sends: its content type, whatever the method. */
  const fioctl = (method: string, raw?: string) =>
    svc.call(method, CERTS, { headers: FIOCTL_HEADERS, ...(raw === undefined ? {} : { raw }) });

  /** What a refusal must leave untouched. */
  async function snapshot() {
    const db = svc.service.ctx.database.db;
    return {
      pki: await db.selectFrom('factory_pki').selectAll().execute(),
      keys: (await db.selectFrom('custody_keys').select('id').execute()).length,
      online: await db.selectFrom('online_cas').selectAll().execute(),
    };
  }

  const crl = async (serials: string[], reason: RevocationReason, signer = rootSigner, issuer = root) => {
    const now = new Date();
    const der = await buildCrl({
      issuerCert: issuer,
      signer,
      revoked: serials.map((serialHex) => ({ serialHex, revokedAt: now, reason })),
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + 15 * 60_000),
      crlNumber: 1,
    });
    return toPem(der, 'X509 CRL');
  };
  const serialOf = (pem: string) => parseCertificate(fromPem(pem, 'CERTIFICATE')).serialHex;
  const deviceCaSerials = async () =>
    splitPemBundle((await fioctl('GET')).json['ca-crt']).map((der) => parseCertificate(der).serialHex);

  beforeAll(async () => {
    svc = await startTestService(backend);
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('GET certs/ of a factory without PKI answers 206, which fioctl reads as "not configured"', async () => {
    const res = await fioctl('GET');
    expect(res.status).toBe(206);
    expectGoDecodes(res.json, CA_CERTS);
  });

  it('refuses rotate-tls or add-device-ca before the PKI exists, and a malformed change-meta', async () => {
    const before = await snapshot();
    const early = await fioctl('POST', caCreateOptions({ init: false, ca: true, est: false, tls: true }));
    expect([early.status, early.json.code]).toEqual([409, 'pki_missing']);
    expect(early.json.detail).toContain('keyferry keys ca create');
    const meta = await fioctl('PATCH', '{"change-meta":"yesterday"}');
    expect([meta.status, meta.json.code]).toEqual([400, 'invalid_request']);
    expect(meta.json.detail).toContain('change-meta');
    const est = await fioctl('PATCH', '{"est-tls-crt":"x","change-meta":{}}');
    expect([est.status, est.json.code]).toEqual([400, 'invalid_request']);
    expect(await snapshot()).toEqual(before);
  });

  it('POST certs/ first-time-init answers the TLS and online CA CSRs, and no EST CSR', async () => {
    const before = await snapshot();
    const est = await fioctl('POST', caCreateOptions({ init: true, ca: true, est: true, tls: true }));
    expect([est.status, est.json.code]).toEqual([400, 'invalid_request']);
    expect(est.json.detail).toContain('est-tls-csr');
    expect(await snapshot()).toEqual(before);

    const res = await fioctl('POST', caCreateOptions({ init: true, ca: true, est: false, tls: true }));
    expect(res.status).toBe(201);
    expectGoDecodes(res.json, CA_CSRS);
    expect(Object.keys(res.json).sort()).toEqual(['ca-csr', 'tls-csr']);
    const tlsCsr = parseCsr(fromPem(res.json['tls-csr'], 'CERTIFICATE REQUEST'));
    const caCsr = parseCsr(fromPem(res.json['ca-csr'], 'CERTIFICATE REQUEST'));
    expect(tlsCsr.dnsNames[0]).toMatch(/^[a-z0-9]+\.ota-lite\.localhost$/);

    // keys ca create: the root signs everything and fioctl PATCHes it in one request
    rootSigner = newSigner();
    root = await factoryRootProfile({ factory: 'demo', signer: rootSigner });
    const tls = await tlsServerFromCsr({
      csr: tlsCsr,
      issuerCert: root,
      signer: rootSigner,
      dnsNames: tlsCsr.dnsNames,
    });
    onlinePem = toPem(
      await intermediateCaFromCsr({ csr: caCsr, issuerCert: root, signer: rootSigner }),
      'CERTIFICATE',
    );
    const localKey = newSigner();
    const localCsr = await createCsr({ subject: { CN: 'local-ca', OU: 'demo' }, signer: localKey });
    localPem = toPem(
      await intermediateCaFromCsr({ csr: localCsr, issuerCert: root, signer: rootSigner }),
      'CERTIFICATE',
    );
    const patch = await fioctl(
      'PATCH',
      caCerts({
        root: toPem(root, 'CERTIFICATE'),
        ca: `${onlinePem}\n${localPem}`,
        tls: toPem(tls, 'CERTIFICATE'),
      }),
    );
    expect(patch.status, JSON.stringify(patch.json)).toBe(200);

    const got = await fioctl('GET');
    expect(got.status).toBe(200);
    expectGoDecodes(got.json, CA_CERTS);
    expect(got.json['ca-crt']).toBe(onlinePem + localPem);
    expect(got.json['disabled-ca-serials']).toEqual([]);
    expect(got.json['change-meta']['created-at']).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(got.json['change-meta']['created-by']).toMatch(/^token:/);
    const online = await svc.service.ctx.database.db.selectFrom('online_cas').selectAll().execute();
    expect(online.map((o) => o.certificate)).toEqual([onlinePem]);
  });

  it('refuses a second first-time-init with a conflict naming the root, and changes nothing', async () => {
    const before = await snapshot();
    const again = await fioctl('POST', caCreateOptions({ init: true, ca: true, est: false, tls: true }));
    expect([again.status, again.json.code]).toEqual([409, 'pki_exists']);
    expect(again.json.detail).toContain('factory demo already has a root CA');
    expect(await snapshot()).toEqual(before);
  });

  it('PATCH certs/ with a blank ca-crt no longer removes every device CA (issue 11 item 5)', async () => {
    const before = await snapshot();
    for (const blank of ['', '   \n']) {
      const res = await svc.call('PATCH', CERTS, { body: { 'ca-crt': blank, 'change-meta': {} } });
      expect([res.status, res.json.code]).toEqual([409, 'conflict']);
      expect(res.json.detail).toContain('remove all 2 device CA(s)');
      expect(res.json.detail).toContain('"remove-device-cas": true');
    }
    expect(await snapshot()).toEqual(before);
  });

  it("refuses a ca-crt that leaves out the service's own online CA, unless the operator says so", async () => {
    const before = await snapshot();
    const res = await fioctl('PATCH', caCerts({ ca: localPem }));
    expect([res.status, res.json.code]).toEqual([409, 'conflict']);
    expect(res.json.detail).toContain(`online device CA 1 (serial ${serialToDecimal(serialOf(onlinePem))})`);
    expect(await snapshot()).toEqual(before);
    // aws-iot-ca is held by the service but never trusted at the gateway: not "left out"
    const aws = await svc.call('POST', '/ota/factories/demo/el2g/aws-iot/', {
      body: { 'registration-code': 'a1b2c3d4' },
    });
    expect(aws.status, JSON.stringify(aws.json)).toBeLessThan(300);
    // leaving out the operator's own local CA is theirs to decide (fioctl keys ca update)
    const dropLocal = await fioctl('PATCH', caCerts({ ca: onlinePem }));
    expect(dropLocal.status).toBe(200);
    const meant = await svc.call('PATCH', CERTS, { body: { 'ca-crt': localPem, 'remove-device-cas': true } });
    expect(meant.status).toBe(200);
    expect(meant.json['ca-crt']).toBe(localPem);
    const back = await fioctl('PATCH', caCerts({ ca: onlinePem + localPem }));
    expect(back.json['ca-crt']).toBe(onlinePem + localPem);
  });

  it('rotate-tls: a new pending gateway key, answered again on retry, in use once its tls-crt comes', async () => {
    const current = (await fioctl('GET')).json['tls-csr'];
    const first = await fioctl('POST', caCreateOptions({ init: false, ca: false, est: false, tls: true }));
    expect(first.status).toBe(201);
    expect(Object.keys(first.json)).toEqual(['tls-csr']);
    expect(first.json['tls-csr']).not.toBe(current);
    const retry = await fioctl('POST', caCreateOptions({ init: false, ca: false, est: false, tls: true }));
    expect(retry.json['tls-csr']).toBe(first.json['tls-csr']);
    expect((await fioctl('GET')).json['tls-csr']).toBe(current);
    const csr = parseCsr(fromPem(first.json['tls-csr'], 'CERTIFICATE REQUEST'));
    const tls = await tlsServerFromCsr({ csr, issuerCert: root, signer: rootSigner, dnsNames: csr.dnsNames });
    const patch = await fioctl('PATCH', caCerts({ tls: toPem(tls, 'CERTIFICATE') }));
    expect(patch.status).toBe(200);
    expect(patch.json['tls-csr']).toBe(first.json['tls-csr']);
    expect(patch.json['tls-crt']).toBe(toPem(tls, 'CERTIFICATE'));
  });

  it('add-device-ca --online-ca: POST ca-csr needs the PKI and answers one CSR', async () => {
    const res = await fioctl('POST', caCreateOptions({ init: false, ca: true, est: false, tls: false }));
    expect(res.status).toBe(201);
    expect(Object.keys(res.json)).toEqual(['ca-csr']);
    const none = await fioctl('POST', caCreateOptions({ init: false, ca: false, est: false, tls: false }));
    expect([none.status, none.json.code]).toEqual([400, 'invalid_request']);
  });

  it('ca-revoke-crl: disables (6), enables (8) and revokes (9) device CAs, signed by the root only', async () => {
    const local = serialOf(localPem);
    const before = await snapshot();
    const stranger = newSigner();
    const strangerRoot = await factoryRootProfile({ factory: 'demo', signer: stranger });
    const forged = await fioctl(
      'PATCH',
      caCerts({ crl: await crl([local], 'privilegeWithdrawn', stranger, strangerRoot) }),
    );
    expect([forged.status, forged.json.code]).toEqual([400, 'untrusted_chain']);
    const unknown = await fioctl('PATCH', caCerts({ crl: await crl(['7b'], 'privilegeWithdrawn') }));
    expect([unknown.status, unknown.json.code]).toEqual([404, 'not_found']);
    expect(unknown.json.detail).toContain('serial 123');
    expect(await snapshot()).toEqual(before);

    const disable = await fioctl('PATCH', caCerts({ crl: await crl([local], 'certificateHold') }));
    expect(disable.status).toBe(200);
    expect(disable.json['disabled-ca-serials']).toEqual([serialToDecimal(local)]);
    expect(await deviceCaSerials()).toContain(local);
    const enable = await fioctl('PATCH', caCerts({ crl: await crl([local], 'removeFromCRL') }));
    expect(enable.json['disabled-ca-serials']).toEqual([]);

    const revoke = await fioctl('PATCH', caCerts({ crl: await crl([local], 'privilegeWithdrawn') }));
    expect(revoke.status).toBe(200);
    expect(revoke.json['ca-revoke-crl']).toContain('-----BEGIN X509 CRL-----');
    expect(await deviceCaSerials()).toEqual([serialOf(onlinePem)]);
    // a revoked CA is gone on purpose: a bundle without it is no silent removal
    const keep = await fioctl('PATCH', caCerts({ ca: onlinePem }));
    expect(keep.status).toBe(200);
  });
});
