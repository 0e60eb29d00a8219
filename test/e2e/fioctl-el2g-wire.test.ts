import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEVICE_ID_TOO_LARGE,
  factoryRootProfile,
  fromPem,
  intermediateCaFromCsr,
  parseCsr,
  softSigner,
  toPem,
} from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FIOCTL_SUCCESS,
  fioctlCall,
  fioctlRequestBytes,
  goInt,
  goNumber,
  goObject,
  goSlice,
  goString,
  type WireAnswer,
} from '../support/fioctl-wire.ts';
import { type DaemonProcess, startKeyferryd } from '../support/processes.ts';

const F = '/ota/factories/demo';
const SE050 = '935389312472';
const GUIDE_HEX = '0x04005001eee3ba1ee96e60047e57da0f6880';
const GUIDE_DEC = '348555492004256518532939906410866457667712';

/* fioctl v0.42's answer types (client/foundries_el2g.go), decoded as Go would. */
const el2gOverview = (v: unknown) => {
  const o = goObject(v, 'El2gOverview');
  return {
    subdomain: goString(o.subdomain, 'El2gOverview.subdomain'),
    productIds: goSlice(o['product-ids'], 'El2gOverview.product-ids', goInt),
  };
};
const el2gCsr = (v: unknown) => {
  const o = goObject(v, 'El2gCsr');
  return { id: goInt(o.id, 'El2gCsr.id'), value: goString(o.value, 'El2gCsr.value') };
};
const el2gAwsCert = (v: unknown) => {
  const o = goObject(v, 'El2gAWSCert');
  return { ca: goString(o.ca, 'El2gAWSCert.ca'), cert: goString(o.cert, 'El2gAWSCert.cert') };
};
const el2gDevice = (v: unknown, f: string) => {
  const o = goObject(v, 'El2gDevice');
  return {
    deviceGroup: goString(o['device-group'], `${f}.device-group`),
    id: goNumber(o.id, `${f}.id`),
    lastConnection: goString(o['last-connection'], `${f}.last-connection`),
  };
};
const el2gProduct = (v: unknown, f = 'El2gProduct') => {
  const o = goObject(v, 'El2gProduct');
  return { type: goString(o.commercialName, `${f}.commercialName`), nc12: goString(o.nc12, `${f}.nc12`) };
};
const el2gIntermediateCa = (v: unknown, f: string) => {
  const o = goObject(v, 'El2gIntermediateCa');
  return {
    id: goNumber(o.id, `${f}.id`),
    name: goString(o.name, `${f}.name`),
    algorithm: goString(o.algorithm, `${f}.algorithm`),
    value: goString(o.value, `${f}.value`),
  };
};
const el2gSecureObject = (v: unknown, f: string) => {
  const o = goObject(v, 'El2gSecureObject');
  return {
    id: goNumber(o.id, `${f}.id`),
    type: goString(o.type, `${f}.type`),
    name: goString(o.name, `${f}.name`),
    objectId: goString(o['object-id'], `${f}.object-id`),
  };
};
const provisionings = (v: unknown) =>
  goSlice(goObject(v, 'resp').content, 'resp.content', (p, f) => {
    const o = goObject(p, 'El2gSecureObjectProvisioning');
    return {
      name: goString(o.secureObjectName, `${f}.secureObjectName`),
      type: goString(o.secureObjectType, `${f}.secureObjectType`),
      state: goString(o.provisioningState, `${f}.provisioningState`),
      cert: goString(o.certificate, `${f}.certificate`),
    };
  });

/** fioctl's add/delete body: `json.Marshal(Req{prodId, []string{id}, production})`. */
const deviceBody = (id: string, production = false) =>
  `{"product-id":"${SE050}","devices":["${id}"],"production":${production}}`;

/**
 * fioctl v0.42's el2g calls, byte for byte as its Go client sends them, against the keyferryd
 * process; every answer must be a success fioctl accepts and decode into its Go types.
 */
describe('fioctl v0.42 el2g requests against keyferryd', () => {
  let work: string;
  let daemon: DaemonProcess;
  let token: string;
  const call = (method: string, path: string, body?: string) =>
    fioctlCall(daemon.listen.api, method, `${F}/${path}`, token, body);
  const ok = (answer: WireAnswer) => {
    expect(FIOCTL_SUCCESS.has(answer.status), `${answer.status} ${answer.body}`).toBe(true);
    return JSON.parse(answer.body) as unknown;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-fioctl-'));
    daemon = await startKeyferryd(join(work, 'data'));
    token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('writes requests as Go does: an empty POST still says JSON, a GET has no body headers', () => {
    expect(fioctlRequestBytes('h:1', 'POST', '/x', 't', '').toString()).toBe(
      'POST /x HTTP/1.1\r\nHost: h:1\r\nUser-Agent: fioctl-v0.42\r\nContent-Length: 0\r\nContent-Type: application/json\r\nOsf-Token: t\r\nAccept-Encoding: gzip\r\n\r\n',
    );
    expect(fioctlRequestBytes('h:1', 'GET', '/x', 't').toString()).not.toMatch(/Content-/);
  });

  it('config-device-gateway: overview, an empty-body POST (twice), the PUT, then status', async () => {
    const overview = el2gOverview(ok(await call('GET', 'el2g/overview/')));
    expect(overview.productIds).toEqual([Number(SE050)]);
    expect(overview.subdomain).toMatch(/\.device-link\.localhost$/);

    // the factory root, as keys ca create leaves it (not one of fioctl's el2g calls)
    const rootSigner = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
    const root = await factoryRootProfile({ factory: 'demo', signer: rootSigner });
    const patched = await fetch(`${daemon.listen.api}${F}/certs/`, {
      method: 'PATCH',
      headers: { 'osf-token': token, 'content-type': 'application/json' },
      body: JSON.stringify({ 'root-crt': toPem(root, 'CERTIFICATE') }),
    });
    expect(patched.status).toBe(200);

    const first = await call('POST', 'el2g/device-gateway/', '');
    const csr = el2gCsr(ok(first));
    expect(first.status).toBe(201);
    const again = await call('POST', 'el2g/device-gateway/', '');
    expect(el2gCsr(ok(again))).toEqual(csr); // a retried command gets the same CSR, no new key

    const signed = await intermediateCaFromCsr({
      csr: parseCsr(fromPem(csr.value, 'CERTIFICATE REQUEST')),
      issuerCert: root,
      signer: rootSigner,
    });
    const put = JSON.stringify({
      id: csr.id,
      'root-ca': toPem(root, 'CERTIFICATE'),
      'signed-cert': toPem(signed, 'CERTIFICATE'),
    });
    ok(await call('PUT', 'el2g/device-gateway/', put));

    // el2g status: its four calls in its order
    const products = goSlice(ok(await call('GET', 'el2g-proxy/products')), 'products', el2gProduct);
    expect(products).toContainEqual({ type: 'SE050C2HQ1/Z01V3', nc12: SE050 });
    expect(el2gOverview(ok(await call('GET', 'el2g/overview/'))).productIds).toEqual([935389312472]);
    const objects = goSlice(ok(await call('GET', 'el2g/secure-objects/')), 'objects', el2gSecureObject);
    expect(objects.map((o) => [o.type, o.name, o.objectId])).toContainEqual([
      'KEYPAIR',
      'fio-device-gateway-ca-kp',
      '83000042',
    ]);
    const cas = goSlice(ok(await call('GET', 'el2g/intermediate-cas/')), 'cas', el2gIntermediateCa);
    expect(cas).toEqual([
      expect.objectContaining({ name: 'fio-device-gateway-ca', value: toPem(signed, 'CERTIFICATE') }),
    ]);
  });

  it('config-aws-iot: the registration code in, {ca, cert} out', async () => {
    const code = 'a'.repeat(64);
    const cert = el2gAwsCert(ok(await call('POST', 'el2g/aws-iot/', `{"registration-code":"${code}"}`)));
    expect(cert.ca).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(cert.cert).toMatch(/^-----BEGIN CERTIFICATE-----/);
  });

  it('devices add / list / show / delete: success is 2xx, a device not added is not', async () => {
    ok(await call('POST', 'el2g/devices/', deviceBody(GUIDE_HEX)));
    ok(await call('POST', 'el2g/devices/', deviceBody(GUIDE_DEC))); // already there: still success

    // the other group: fioctl must not print success
    const other = await call('POST', 'el2g/devices/', deviceBody(GUIDE_HEX, true));
    expect(other.status).toBe(409);
    expect(JSON.parse(other.body)).toMatchObject({
      code: 'device_in_other_group',
      info: { results: [{ id: GUIDE_HEX, status: 'in-other-group', group: 'fio-935389312472' }] },
    });
    const big = '0xff005001eee3ba1ee96e60047e57da0f6880';
    const tooLarge = await call('POST', 'el2g/devices/', deviceBody(big));
    expect(tooLarge.status).toBe(400);
    expect(JSON.parse(tooLarge.body).detail).toBe(
      `no device added: invalid device id "${big}": ${DEVICE_ID_TOO_LARGE}`,
    );

    const list = goSlice(ok(await call('GET', 'el2g/devices/')), 'devices', el2gDevice);
    expect(list).toEqual([{ deviceGroup: 'fio-935389312472', id: GUIDE_DEC, lastConnection: '' }]);

    expect(el2gProduct(ok(await call('GET', `el2g-proxy/devices/${GUIDE_HEX}/product`)))).toEqual({
      type: 'SE050C2HQ1/Z01V3',
      nc12: SE050,
    });
    const shown = provisionings(
      ok(await call('GET', `el2g-proxy/rtp/devices/${GUIDE_HEX}/secure-object-provisionings`)),
    );
    expect(shown.map((p) => p.state)).toContain('GENERATION_ON_CONNECTION');

    const wrongGroup = await call('DELETE', 'el2g/devices/', deviceBody(GUIDE_HEX, true));
    expect(wrongGroup.status).toBe(409);
    ok(await call('DELETE', 'el2g/devices/', deviceBody(GUIDE_HEX)));
    ok(await call('DELETE', 'el2g/devices/', deviceBody(GUIDE_HEX))); // already gone: success
    expect(goSlice(ok(await call('GET', 'el2g/devices/')), 'devices', el2gDevice)).toEqual([]);
  });

  it('el2g devices gets every device in one answer, however many there are', async () => {
    const ids = Array.from({ length: 2500 }, (_, i) => `0x0400aaaa${i.toString(16).padStart(28, '0')}`);
    for (let i = 0; i < ids.length; i += 1000) {
      const res = await fetch(`${daemon.listen.api}${F}/el2g/devices/`, {
        method: 'POST',
        headers: { 'osf-token': token, 'content-type': 'application/json' },
        body: JSON.stringify({ 'product-id': SE050, devices: ids.slice(i, i + 1000) }),
      });
      expect(res.status).toBe(200);
    }
    const answer = await call('GET', 'el2g/devices/');
    expect(answer.headers['transfer-encoding']).toBe('chunked');
    const list = goSlice(ok(answer), 'devices', el2gDevice);
    expect(list).toHaveLength(2500);
    expect(new Set(list.map((d) => d.id)).size).toBe(2500);
  }, 120_000);
});
