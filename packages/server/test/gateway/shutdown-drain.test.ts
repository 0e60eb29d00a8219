import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import {
  createCsr,
  decodeCertsOnly,
  factoryRootProfile,
  fromPem,
  intermediateCaFromCsr,
  softSigner,
  tlsServerFromCsr,
  toPem,
} from '@keyferry/core';
import { createSecureElement, loadOrCreateVendorCa } from '@keyferry/sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceLinkCall } from '../../../../test/support/device-link.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  startKeyferryd,
} from '../../../../test/support/processes.ts';
import { rawTls } from '../../../../test/support/raw-tls.ts';
import { SE050 } from '../devicelink/fixture.ts';

/** Far past the 10 s grace period: only the drain (or the grace cut) ends a gateway connection. */
const LONG = 600_000;

describe('device gateway on SIGTERM (real keyferryd)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let daemon: DaemonProcess;
  let stopped = false;
  /** What a provisioned device connects to the gateway with. */
  let device: { address: string; ca: string; servername: string; key: string; cert: string };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-gw-drain-'));
    const vendor = await loadOrCreateVendorCa(join(work, 'vendor'));
    const config = join(work, 'keyferry.json');
    writeFileSync(
      config,
      JSON.stringify({
        demoFactory: { enabled: true },
        products: [{ nc12: SE050, name: 'SE050', trustAnchors: [vendor.certificateFile] }],
        // no timeout of the gateway's may close a connection during the test
        gateway: {
          limits: {
            headersTimeoutMs: LONG,
            requestTimeoutMs: LONG,
            keepAliveTimeoutMs: LONG,
            idleTimeoutMs: LONG,
          },
        },
      }),
    );
    const dataDir = join(work, 'data');
    daemon = await startKeyferryd(dataDir, { args: ['--config', config] });
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${daemon.listen.api}/ota/factories${path}`, {
        method,
        headers: { 'osf-token': token, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const json = await res.json();
      expect(res.status, `${method} ${path}: ${JSON.stringify(json)}`).toBeLessThan(300);
      return json;
    };
    // the operator's setup (keys ca create, el2g config-device-gateway) through the API
    const repoId = (await api('GET', '/')).find((f: { name: string }) => f.name === 'demo')['repo-id'];
    const host = `${repoId}.ota-lite.localhost`;
    const rootSigner = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
    const root = await factoryRootProfile({ factory: 'demo', signer: rootSigner });
    const rootPem = toPem(root, 'CERTIFICATE');
    const tls = await tlsServerFromCsr({
      csr: fromPem((await api('GET', '/demo/certs/'))['tls-csr'], 'CERTIFICATE REQUEST'),
      issuerCert: root,
      signer: rootSigner,
      dnsNames: [host],
    });
    await api('PATCH', '/demo/certs/', { 'root-crt': rootPem, 'tls-crt': toPem(tls, 'CERTIFICATE') });
    const request = await api('POST', '/demo/el2g/device-gateway/', {});
    const ca = await intermediateCaFromCsr({
      csr: fromPem(request.value, 'CERTIFICATE REQUEST'),
      issuerCert: root,
      signer: rootSigner,
    });
    const caPem = toPem(ca, 'CERTIFICATE');
    await api('PUT', '/demo/el2g/device-gateway/', {
      id: request.id,
      'root-ca': rootPem,
      'signed-cert': caPem,
    });
    await api('PATCH', '/demo/certs/', { 'ca-crt': caPem });

    // a device allow-listed and enrolled over the device-link, as keyferry-agent does it
    const se = join(work, 'se');
    const made = await createSecureElement({ vendor, product: SE050, backend: { kind: 'dir', dir: se } });
    await api('POST', '/demo/el2g/devices/', { 'product-id': SE050, devices: [made.uid.decimal] });
    const { subdomain } = await api('GET', '/demo/el2g/overview/');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = await createCsr({ subject: { CN: 'device' }, signer: softSigner(privateKey) });
    const enrolled = await deviceLinkCall({
      address: daemon.listen.deviceLink!,
      ca: readFileSync(join(dataDir, 'service-ca.pem'), 'utf8'),
      servername: subdomain,
      key: readFileSync(join(se, 'SE_f0000000.key.pem'), 'utf8'),
      cert: readFileSync(join(se, 'SE_f0000001.pem'), 'utf8'),
      method: 'POST',
      path: '/.well-known/est/fio-device-gateway-ca/simpleenroll',
      headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
      body: Buffer.from(csr).toString('base64'),
    });
    expect(enrolled.status, enrolled.text).toBe(200);
    const [leaf] = decodeCertsOnly(new Uint8Array(Buffer.from(enrolled.text.replace(/\s+/g, ''), 'base64')));
    device = {
      address: daemon.listen.gateway!,
      ca: rootPem,
      servername: host,
      key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      cert: toPem(leaf!, 'CERTIFICATE'),
    };
  });
  afterAll(async () => {
    if (!stopped) await daemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('closes idle connections at once, answers the request in flight with Connection: close, takes no new one, exits 0', async () => {
    const get = 'GET /device HTTP/1.1\r\nhost: gateway\r\n';
    const idle = await rawTls(device);
    idle.socket.write(`${get}\r\n`);
    const first = await idle.answer();
    expect(first.status, first.body).toBe(200);
    expect(first.head).not.toMatch(/\r\nconnection: close\r\n/i);

    // One write, so one TLS record: once the first request is answered, the server has also
    // read the head of the second, which lacks its final CRLF. That request is in flight.
    const inFlight = await rawTls(device);
    inFlight.socket.write(`${get}\r\n${get}`);
    expect((await inFlight.answer()).status).toBe(200);
    const from = inFlight.length;

    const exited = daemon.stop();
    stopped = true;
    // The idle connection is closed by the drain, while the one in flight stays open: the grace
    // period's cut (keyferryd's gateway timeouts are set far longer) would close both.
    await idle.closed;
    expect(inFlight.ended).toBe(false);
    const [host, port] = device.address.split(':');
    const refused = connect({ host, port: Number(port), rejectUnauthorized: false });
    // a listener still (or again) on the port would connect: that fails here, it does not hang
    const outcome = await Promise.race([
      once(refused, 'error').then(([error]) => (error as NodeJS.ErrnoException).code),
      once(refused, 'connect').then(() => 'connected'),
    ]);
    refused.destroy();
    expect(outcome).toBe('ECONNREFUSED');

    inFlight.socket.write('\r\n');
    const answer = await inFlight.answer(from);
    expect(answer.status, answer.body).toBe(200);
    expect(answer.head).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(answer.body)).toMatchObject({ factory: 'demo' });
    await inFlight.closed;
    expect(await exited).toBe(0);
  });
});
