import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueDeviceCertificate, parseCrl, toPem } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IssuingCas } from '../../src/devicelink/issuing-cas.ts';
import { currentCrl } from '../../src/revocation/crl-store.ts';
import { type DeviceLinkFixture, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

/**
 * Issue 15 §2: renewal (`simplereenroll`) authenticated by the certificate being renewed, played
 * by curl + openssl: same key, new key, the superseded certificate revoked only after the report,
 * the refusals of a device certificate outside its one use, and an expired certificate.
 */
let f: DeviceLinkFixture;
let work: string;
let device: TestDevice;
let host: string;
let port: string;
const LABEL = 'fio-device-gateway-ca';
const DAY_MS = 24 * 3600 * 1000;

beforeAll(async () => {
  f = await startDeviceLinkFixture();
  work = mkdtempSync(join(tmpdir(), 'keyferry-renew-'));
  device = await f.device();
  writeFileSync(join(work, 'identity.key'), device.key);
  writeFileSync(join(work, 'identity.pem'), device.cert);
  writeFileSync(join(work, 'service-ca.pem'), f.serviceCa);
  host = `${f.subdomain}.device-link.localhost`;
  port = f.address.split(':').pop()!;
  for (const name of ['gw1', 'gw2']) await newKeyAndCsr(name);
});
afterAll(async () => {
  await f?.svc.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: work, encoding: 'utf8' }, (error, stdout, stderr) =>
      error ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || error.message}`)) : resolve(stdout),
    );
  });
}

/** `<name>.key` (P-256) and `<name>.b64`, its CSR as base64 DER. */
async function newKeyAndCsr(name: string) {
  await run('openssl', [
    'genpkey',
    '-algorithm',
    'EC',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-out',
    `${name}.key`,
  ]);
  await run('openssl', [
    'req',
    '-new',
    '-key',
    `${name}.key`,
    '-subj',
    '/CN=device',
    '-outform',
    'DER',
    '-out',
    `${name}.der`,
  ]);
  await run('openssl', ['base64', '-in', `${name}.der`, '-out', `${name}.b64`]);
}

/** curl over the device-link with `cert`/`key` as the TLS client credential. */
async function curl(path: string, tls: { cert: string; key: string }, args: string[]) {
  const out = await run('curl', [
    '--silent',
    '--show-error',
    '--cacert',
    'service-ca.pem',
    '--resolve',
    `${host}:${port}:127.0.0.1`,
    '--cert',
    tls.cert,
    '--key',
    tls.key,
    '-o',
    'body.txt',
    '-w',
    '%{http_code}',
    ...args,
    `https://${host}:${port}${path}`,
  ]);
  return { status: Number(out), body: readFileSync(join(work, 'body.txt'), 'utf8') };
}

const IDENTITY = { cert: 'identity.pem', key: 'identity.key' };
const csrArgs = (name: string) => [
  '-H',
  'Content-Type: application/pkcs10',
  '-H',
  'Content-Transfer-Encoding: base64',
  '--data-binary',
  `@${name}.b64`,
];

/** Enrolls (or renews) over curl and writes the certificate to `<out>.pem`. */
async function est(op: string, tls: { cert: string; key: string }, csr: string, out: string) {
  const res = await curl(`/.well-known/est/${LABEL}/${op}`, tls, csrArgs(csr));
  expect(res.status, res.body).toBe(200);
  await run('openssl', ['base64', '-d', '-in', 'body.txt', '-out', `${out}.p7`]);
  const pem = await run('openssl', ['pkcs7', '-inform', 'DER', '-in', `${out}.p7`, '-print_certs']);
  writeFileSync(join(work, `${out}.pem`), pem);
  return x509(`${out}.pem`);
}

async function x509(file: string) {
  const text = await run('openssl', ['x509', '-in', file, '-noout', '-serial', '-enddate', '-pubkey']);
  return {
    serial: /serial=([0-9A-F]+)/
      .exec(text)![1]!
      .toLowerCase()
      .replace(/^(00)+(?=.)/, ''),
    notAfter: new Date(/notAfter=(.*)/.exec(text)![1]!),
    pubkey: text.slice(text.indexOf('-----BEGIN PUBLIC KEY')),
  };
}

const db = () => f.svc.service.ctx.database.db;

/** Everything a refusal must leave as it was: certificates and object states. */
async function snapshot() {
  const certs = await db().selectFrom('certificates').selectAll().orderBy('id').execute();
  const objects = await db().selectFrom('device_objects').selectAll().orderBy('secure_object_id').execute();
  const devices = await db().selectFrom('devices').select(['id', 'state_rank', 'deleted_at']).execute();
  return { certs, objects, devices };
}

async function live(serial: string) {
  const row = await db()
    .selectFrom('certificates')
    .select(['revoked_at', 'revocation_reason'])
    .where('serial_hex', '=', serial)
    .executeTakeFirstOrThrow();
  return row;
}

describe('simplereenroll authenticated by the current device certificate (curl + openssl)', () => {
  let first: Awaited<ReturnType<typeof x509>>;
  let renewed: Awaited<ReturnType<typeof x509>>;
  let rekeyed: Awaited<ReturnType<typeof x509>>;

  it('renews with the same key: a new certificate for a year, the old one still valid', async () => {
    first = await est('simpleenroll', IDENTITY, 'gw1', 'first');
    expect(first.notAfter.getTime() - Date.now()).toBeGreaterThan(19 * 365 * DAY_MS);
    renewed = await est('simplereenroll', { cert: 'first.pem', key: 'gw1.key' }, 'gw1', 'renewed');
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.pubkey).toBe(first.pubkey);
    const days = (renewed.notAfter.getTime() - Date.now()) / DAY_MS;
    expect(days).toBeGreaterThan(364);
    expect(days).toBeLessThan(366);
    // the profile is the object's: same subject and issuer as the first certificate
    const subject = async (file: string) =>
      run('openssl', [
        'x509',
        '-in',
        file,
        '-noout',
        '-subject',
        '-issuer',
        '-ext',
        'keyUsage,extendedKeyUsage',
      ]);
    expect(await subject('renewed.pem')).toBe(await subject('first.pem'));
    expect(await live(first.serial)).toEqual({ revoked_at: null, revocation_reason: null });
  });

  it('rekeys with a new key, authenticated by the renewed certificate', async () => {
    rekeyed = await est('simplereenroll', { cert: 'renewed.pem', key: 'gw1.key' }, 'gw2', 'rekeyed');
    expect(rekeyed.pubkey).toBe(await run('openssl', ['pkey', '-in', 'gw2.key', '-pubout']));
    for (const serial of [first.serial, renewed.serial, rekeyed.serial])
      expect((await live(serial)).revoked_at).toBeNull();
    expect((await f.states(device))[LABEL]?.state).toBe('GENERATION_COMPLETED');
  });

  it('a device certificate is refused for everything but renewing its own object; nothing changes', async () => {
    const before = await snapshot();
    const audits = await f.count('audit_log');
    const tls = { cert: 'rekeyed.pem', key: 'gw2.key' };
    const refused = [
      await curl('/device-link/v1/manifest', tls, []),
      await curl(`/.well-known/est/${LABEL}/simpleenroll`, tls, csrArgs('gw2')),
      await curl('/.well-known/est/aws-iot-ca/simplereenroll', tls, csrArgs('gw2')),
      await curl('/device-link/v1/report', tls, [
        '-H',
        'Content-Type: application/json',
        '--data',
        JSON.stringify({ results: [{ name: LABEL, status: 'SUCCESS' }] }),
      ]),
    ];
    for (const res of refused) {
      expect(res.status, res.body).toBe(403);
      const problem = JSON.parse(res.body);
      expect(problem.code).toBe('forbidden');
      expect(problem.detail).toMatch(
        new RegExp(`authenticates only simplereenroll of its own object \\(${LABEL}\\).*vendor identity`),
      );
    }
    expect(JSON.parse(refused[0]!.body).detail).toContain('not /device-link/v1/manifest');
    expect(JSON.parse(refused[2]!.body).detail).toContain('not simplereenroll of "aws-iot-ca"');
    expect(await snapshot()).toEqual(before);
    expect(await f.count('audit_log')).toBe(audits + refused.length);
  });

  it('the superseded certificates are revoked only when the device reports the new one stored', async () => {
    const caId = (
      await db()
        .selectFrom('certificates')
        .select('ca_id')
        .where('serial_hex', '=', first.serial)
        .executeTakeFirstOrThrow()
    ).ca_id;
    const deps = { db: db(), custody: f.svc.service.ctx.custody };
    const revokedOnCrl = async () =>
      parseCrl((await currentCrl(deps, caId)).der).entries.map((e) => e.serialHex);
    expect(await revokedOnCrl()).not.toContain(first.serial);

    const report = await curl('/device-link/v1/report', IDENTITY, [
      '-H',
      'Content-Type: application/json',
      '--data',
      JSON.stringify({ results: [{ name: LABEL, status: 'SUCCESS' }] }),
    ]);
    expect(report.status, report.body).toBe(200);
    for (const serial of [first.serial, renewed.serial])
      expect(await live(serial)).toMatchObject({ revocation_reason: 'superseded' });
    expect(await live(rekeyed.serial)).toEqual({ revoked_at: null, revocation_reason: null });
    const onCrl = await revokedOnCrl();
    expect(onCrl).toEqual(expect.arrayContaining([first.serial, renewed.serial]));
    expect(onCrl).not.toContain(rekeyed.serial);
    expect((await f.states(device))[LABEL]?.state).toBe('PROVISIONING_COMPLETED');
    // el2g devices show's source: the newest certificate, when it expires and when to renew it
    const shown = await f.svc.call(
      'GET',
      `/ota/factories/demo/el2g-proxy/rtp/devices/${device.uid.decimal}/secure-object-provisionings`,
    );
    const gateway = shown.json.content.find(
      (o: { secureObjectName: string }) => o.secureObjectName === LABEL,
    );
    expect(gateway.renewal).toEqual({
      notAfter: rekeyed.notAfter.toISOString(),
      renewFrom: new Date(rekeyed.notAfter.getTime() - 30 * DAY_MS).toISOString(),
      renewedValidityDays: 365,
      rotationRequestedAt: null,
    });
    expect(gateway.certificate).toBe(
      readFileSync(join(work, 'rekeyed.pem'), 'utf8')
        .replace(/^(subject|issuer)=.*\n/gm, '')
        .trim() + '\n',
    );

    // a superseded certificate renews nothing any more
    const before = await snapshot();
    const stale = await curl(
      `/.well-known/est/${LABEL}/simplereenroll`,
      { cert: 'renewed.pem', key: 'gw1.key' },
      csrArgs('gw1'),
    );
    expect(stale.status).toBe(403);
    expect(JSON.parse(stale.body)).toMatchObject({ code: 'certificate_revoked' });
    expect(JSON.parse(stale.body).detail).toMatch(/was revoked \(superseded\)/);
    expect(await snapshot()).toEqual(before);
  });

  it('an expired certificate cannot renew itself; the vendor identity still can', async () => {
    const other = await f.device();
    writeFileSync(join(work, 'other-identity.key'), other.key);
    writeFileSync(join(work, 'other-identity.pem'), other.cert);
    const otherIdentity = { cert: 'other-identity.pem', key: 'other-identity.key' };
    const issued = await est('simpleenroll', otherIdentity, 'gw1', 'other');
    // The same device's certificate as keyferry issued it two years ago for one day: expired.
    const row = await db()
      .selectFrom('certificates')
      .selectAll()
      .where('serial_hex', '=', issued.serial)
      .executeTakeFirstOrThrow();
    const factory = await db()
      .selectFrom('factories')
      .selectAll()
      .where('name', '=', 'demo')
      .executeTakeFirstOrThrow();
    const ca = await new IssuingCas(db(), f.svc.service.ctx.custody).get(factory, row.ca_id, { days: 1 });
    const pubkey = await run('openssl', [
      'pkey',
      '-in',
      'gw1.key',
      '-pubout',
      '-outform',
      'DER',
      '-out',
      'gw1.spki',
    ]);
    expect(pubkey).toBe('');
    const expired = await issueDeviceCertificate({
      template: ca.template,
      deviceId: other.uid,
      publicKeySpki: new Uint8Array(readFileSync(join(work, 'gw1.spki'))),
      signer: ca.signer,
      now: new Date(Date.now() - 2 * 365 * DAY_MS),
    });
    await db()
      .updateTable('certificates')
      .set({
        serial_hex: expired.serialHex,
        pem: toPem(expired.der, 'CERTIFICATE'),
        not_before: expired.notBefore.toISOString(),
        not_after: expired.notAfter.toISOString(),
      })
      .where('id', '=', row.id)
      .execute();
    writeFileSync(join(work, 'expired.pem'), toPem(expired.der, 'CERTIFICATE'));

    const before = await snapshot();
    const res = await curl(
      `/.well-known/est/${LABEL}/simplereenroll`,
      { cert: 'expired.pem', key: 'gw1.key' },
      csrArgs('gw2'),
    );
    expect(res.status, res.body).toBe(403);
    const problem = JSON.parse(res.body);
    expect(problem.code).toBe('untrusted_identity');
    expect(problem.detail).toMatch(
      /an expired certificate cannot renew itself; renew with the secure element's vendor identity/,
    );
    expect(await snapshot()).toEqual(before);

    const byIdentity = await est('simplereenroll', otherIdentity, 'gw2', 'other-renewed');
    expect(byIdentity.notAfter.getTime()).toBeGreaterThan(Date.now() + 364 * DAY_MS);
  });

  it('a certificate keyferry did not issue is refused, naming the vendor identity', async () => {
    const before = await snapshot();
    await run('openssl', [
      'req',
      '-x509',
      '-key',
      'gw1.key',
      '-subj',
      `/CN=${device.uid.hex}/OU=demo`,
      '-days',
      '1',
      '-out',
      'forged.pem',
    ]);
    const res = await curl(
      `/.well-known/est/${LABEL}/simplereenroll`,
      { cert: 'forged.pem', key: 'gw1.key' },
      csrArgs('gw1'),
    );
    expect(res.status, res.body).toBe(403);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'untrusted_identity' });
    expect(JSON.parse(res.body).detail).toMatch(
      /was not issued by factory demo; connect with the secure element's vendor identity/,
    );
    expect(await snapshot()).toEqual(before);
  });

  it("renews for the object's configured renewal validity; the provisioning API takes and shows it", async () => {
    const created = await f.svc.call('POST', '/ota/factories/demo/el2g-proxy/secure-objects', {
      body: { name: 'renew-demo-kp', type: 'KEYPAIR', objectId: '83000050' },
    });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    const cert = await f.svc.call('POST', '/ota/factories/demo/el2g-proxy/secure-objects', {
      body: {
        name: 'renew-demo',
        type: 'CERTIFICATE',
        objectId: '83000051',
        keypairId: created.json.id,
        caId: (
          await db()
            .selectFrom('secure_objects')
            .select('ca_id')
            .where('name', '=', LABEL)
            .executeTakeFirstOrThrow()
        ).ca_id,
        renewalValidityDays: 90,
        renewalWindowDays: 10,
      },
    });
    expect(cert.status, JSON.stringify(cert.json)).toBe(201);
    expect(cert.json).toMatchObject({ renewalValidityDays: 90, renewalWindowDays: 10, validityDays: null });
    const listed = await f.svc.call('GET', '/ota/factories/demo/el2g-proxy/secure-objects');
    // unset: the defaults, a year and 30 days
    expect(listed.json.content.find((o: { name: string }) => o.name === LABEL)).toMatchObject({
      renewalValidityDays: 365,
      renewalWindowDays: 30,
    });

    // the gateway object with a renewal validity of 30 days: the next renewal lives 30 days
    await db()
      .updateTable('secure_objects')
      .set({ renewal_validity_days: 30 })
      .where('name', '=', LABEL)
      .execute();
    try {
      const short = await est('simplereenroll', IDENTITY, 'gw2', 'short');
      const days = (short.notAfter.getTime() - Date.now()) / DAY_MS;
      expect(days).toBeGreaterThan(29);
      expect(days).toBeLessThan(31);
    } finally {
      await db()
        .updateTable('secure_objects')
        .set({ renewal_validity_days: null })
        .where('name', '=', LABEL)
        .execute();
    }
  });

  it('PATCH sets validity and renewal in seconds; a validity under 60 s or a window not shorter than it is refused and changes nothing', async () => {
    const listed = await f.svc.call('GET', '/ota/factories/demo/el2g-proxy/secure-objects');
    const byName = (name: string) => listed.json.content.find((o: { name: string }) => o.name === name);
    const path = `/ota/factories/demo/el2g-proxy/secure-objects/${byName('renew-demo').id}`;
    const row = () =>
      db()
        .selectFrom('secure_objects')
        .selectAll()
        .where('name', '=', 'renew-demo')
        .executeTakeFirstOrThrow();
    const before = await row();
    const refusals: Array<[Record<string, number>, RegExp]> = [
      [{ validitySeconds: 30 }, /validitySeconds 30 is under 60 seconds/],
      [
        { validitySeconds: 120, renewalWindowSeconds: 120 },
        /window of 120 seconds is not shorter than the certificate validity of 120 seconds/,
      ],
    ];
    for (const [body, detail] of refusals) {
      const refused = await f.svc.call('PATCH', path, { body });
      expect(refused.status).toBe(400);
      expect(refused.headers.get('content-type')).toContain('application/problem+json');
      expect(refused.json).toMatchObject({ code: 'invalid_request' });
      expect(refused.json.detail).toMatch(detail);
      expect(await row()).toEqual(before);
    }
    const keypair = await f.svc.call(
      'PATCH',
      `/ota/factories/demo/el2g-proxy/secure-objects/${byName('renew-demo-kp').id}`,
      { body: { validitySeconds: 120 } },
    );
    expect(keypair.status).toBe(400);
    expect(keypair.json.detail).toMatch(
      /is a KEYPAIR; validity and renewal belong to its CERTIFICATE object/,
    );

    const set = await f.svc.call('PATCH', path, { body: { validitySeconds: 120, renewalWindowSeconds: 90 } });
    expect(set.status, JSON.stringify(set.json)).toBe(200);
    expect(set.json).toMatchObject({
      validitySeconds: 120,
      renewalValiditySeconds: (90 * DAY_MS) / 1000,
      renewalValidityDays: 90,
      renewalWindowSeconds: 90,
      renewalWindowDays: 1,
    });
    expect(await row()).toMatchObject({
      validity_seconds: 120,
      renewal_window_seconds: 90,
      renewal_window_days: 10,
    });
  });
});
