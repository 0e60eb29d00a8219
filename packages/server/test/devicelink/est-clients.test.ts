import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { KeyferryError } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendProblem } from '../../src/devicelink/http-io.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

/**
 * Issue 15 §1: the device-link as standard EST clients (RFC 7030, RFC 8951) see it, played by
 * curl + openssl and by a raw TLS socket that reads header names byte for byte as libest does.
 */
let f: DeviceLinkFixture;
let work: string;
let device: TestDevice;
let host: string;
let port: string;

beforeAll(async () => {
  f = await startDeviceLinkFixture();
  work = mkdtempSync(join(tmpdir(), 'keyferry-est-'));
  device = await f.device();
  writeFileSync(join(work, 'identity.key'), device.key);
  writeFileSync(join(work, 'identity.pem'), device.cert);
  writeFileSync(join(work, 'service-ca.pem'), f.serviceCa);
  host = `${f.subdomain}.device-link.localhost`;
  port = f.address.split(':').pop()!;
  await run('openssl', [
    'genpkey',
    '-algorithm',
    'EC',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-out',
    'gw.key',
  ]);
  await run('openssl', [
    'req',
    '-new',
    '-key',
    'gw.key',
    '-subj',
    '/CN=device',
    '-outform',
    'DER',
    '-out',
    'csr.der',
  ]);
  await run('openssl', ['base64', '-in', 'csr.der', '-out', 'csr.b64']);
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

/** curl against the device-link: status, the raw header block, and the body file's text. */
async function curl(path: string, options: { identity?: boolean; args?: string[] } = {}) {
  const out = await run('curl', [
    '--silent',
    '--show-error',
    '--cacert',
    'service-ca.pem',
    '--resolve',
    `${host}:${port}:127.0.0.1`,
    ...(options.identity ? ['--key', 'identity.key', '--cert', 'identity.pem'] : []),
    '-D',
    'headers.txt',
    '-o',
    'body.txt',
    '-w',
    '%{http_code}',
    ...(options.args ?? []),
    `https://${host}:${port}${path}`,
  ]);
  return {
    status: Number(out),
    headers: readFileSync(join(work, 'headers.txt'), 'utf8'),
    body: readFileSync(join(work, 'body.txt'), 'utf8'),
  };
}

const ENROLL = ['-H', 'Content-Type: application/pkcs10', '-H', 'Content-Transfer-Encoding: base64'];

describe('EST with curl + openssl', () => {
  it('cacerts needs no client certificate; the label-less path serves fio-device-gateway-ca', async () => {
    for (const path of ['/.well-known/est/cacerts', '/.well-known/est/fio-device-gateway-ca/cacerts']) {
      const res = await curl(path);
      expect(res.status, res.body).toBe(200);
      expect(res.headers).toContain('\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n');
      expect(res.headers).toContain('\r\nContent-Transfer-Encoding: base64\r\n');
      await run('openssl', ['base64', '-d', '-in', 'body.txt', '-out', 'cacerts.p7']);
      const pem = await run('openssl', ['pkcs7', '-inform', 'DER', '-in', 'cacerts.p7', '-print_certs']);
      expect(pem.replace(/^(subject|issuer)=.*\n/gm, '').replace(/\n\n/g, '\n')).toBe(
        `${f.pki.intermediatePem}${f.pki.rootPem}`,
      );
    }
  });

  it('csrattrs answers P-256 and ecdsa-with-SHA256 (RFC 7030 §4.5) as base64 DER', async () => {
    const res = await curl('/.well-known/est/csrattrs');
    expect(res.status, res.body).toBe(200);
    expect(res.headers).toContain('\r\nContent-Type: application/csrattrs\r\n');
    await run('openssl', ['base64', '-d', '-in', 'body.txt', '-out', 'attrs.der']);
    const parsed = await run('openssl', ['asn1parse', '-inform', 'DER', '-in', 'attrs.der']);
    expect(parsed.split('\n').map((l) => l.replace(/^.*?(cons|prim): /, '$1 ').trim())).toEqual([
      'cons SEQUENCE',
      'cons SEQUENCE',
      'prim OBJECT            :id-ecPublicKey',
      'cons SET',
      'prim OBJECT            :prime256v1',
      'prim OBJECT            :ecdsa-with-SHA256',
      '',
    ]);
    const unknown = await curl('/.well-known/est/no-such-ca/csrattrs');
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body)).toMatchObject({ code: 'unknown_label' });
    expect(JSON.parse(unknown.body).detail).toMatch(
      /has no certificate object "no-such-ca"; it has: fio-device-gateway-ca/,
    );
  });

  it('a 401 carries WWW-Authenticate; a wrong method is 405 with Allow', async () => {
    const anonymous = await curl('/.well-known/est/simpleenroll', {
      args: [...ENROLL, '--data-binary', '@csr.b64'],
    });
    expect(anonymous.status).toBe(401);
    expect(JSON.parse(anonymous.body).code).toBe('unauthenticated');
    expect(anonymous.headers).toContain(
      '\r\nWWW-Authenticate: TLS-Client-Certificate realm="keyferry device-link"\r\n',
    );
    const manifest = await curl('/device-link/v1/manifest');
    expect(manifest.status).toBe(401);
    expect(manifest.headers).toMatch(/\r\nWWW-Authenticate: /);

    for (const [method, path, allow] of [
      ['POST', '/.well-known/est/cacerts', 'GET'],
      ['PUT', '/.well-known/est/fio-device-gateway-ca/csrattrs', 'GET'],
      ['GET', '/.well-known/est/simpleenroll', 'POST'],
      ['DELETE', '/device-link/v1/report', 'POST'],
    ] as const) {
      const res = await curl(path, { identity: true, args: ['-X', method] });
      expect(res.status, `${method} ${path}`).toBe(405);
      expect(res.headers).toContain(`\r\nAllow: ${allow}\r\n`);
      expect(JSON.parse(res.body)).toMatchObject({
        code: 'method_not_allowed',
        detail: `${path} takes ${allow}, not ${method}`,
      });
    }
  });

  it('enrolls an openssl CSR at the label-less simpleenroll; base64 whatever Content-Transfer-Encoding says; DER refused', async () => {
    const first = await curl('/.well-known/est/simpleenroll', {
      identity: true,
      args: [...ENROLL, '--data-binary', '@csr.b64'],
    });
    expect(first.status, first.body).toBe(200);
    await run('openssl', ['base64', '-d', '-in', 'body.txt', '-out', 'cert.p7']);
    const pem = await run('openssl', ['pkcs7', '-inform', 'DER', '-in', 'cert.p7', '-print_certs']);
    writeFileSync(join(work, 'device.pem'), pem);
    expect(await run('openssl', ['x509', '-in', 'device.pem', '-noout', '-pubkey'])).toBe(
      await run('openssl', ['pkey', '-in', 'gw.key', '-pubout']),
    );
    const objects = await f.states(device);
    expect(objects['fio-device-gateway-ca']?.state).toBe('GENERATION_COMPLETED');

    // RFC 8951: a client that labels the base64 body "binary" (or sends no label) is understood
    for (const label of [['-H', 'Content-Transfer-Encoding: binary'], []]) {
      const again = await curl('/.well-known/est/fio-device-gateway-ca/simpleenroll', {
        identity: true,
        args: ['-H', 'Content-Type: application/pkcs10', ...label, '--data-binary', '@csr.b64'],
      });
      expect(again.status, again.body).toBe(200);
      expect(again.body).toBe(first.body);
    }

    const der = await curl('/.well-known/est/simpleenroll', {
      identity: true,
      args: ['-H', 'Content-Type: application/pkcs10', '--data-binary', '@csr.der'],
    });
    expect(der.status).toBe(400);
    expect(JSON.parse(der.body)).toMatchObject({
      code: 'csr_invalid',
      detail:
        'the body is binary DER; EST takes the CSR base64-encoded whatever Content-Transfer-Encoding says (RFC 8951): send the base64 of the DER',
    });
    // the refusal did not undo the issued certificate's state
    expect((await f.states(device))['fio-device-gateway-ca']?.state).toBe('GENERATION_COMPLETED');
  });
});

/** How RFC 9110 spells a header name; libest finds `Content-Type` but not `content-type`. */
function canonical(name: string): string {
  if (name.toLowerCase() === 'www-authenticate') return 'WWW-Authenticate';
  return name
    .split('-')
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1).toLowerCase())
    .join('-');
}

/** The header names of a raw HTTP/1.1 answer, exactly as the bytes spell them. */
function headerNames(raw: Buffer): string[] {
  const head = raw.toString('latin1').split('\r\n\r\n')[0]!;
  const [status, ...lines] = head.split('\r\n');
  expect(status).toMatch(/^HTTP\/1\.1 \d{3} /);
  return lines.map((line) => line.slice(0, line.indexOf(':')));
}

/** One request over a TLS socket, the answer's bytes as received. */
function rawCall(request: string, body: string, options: { identity: boolean }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port: Number(port),
      servername: host,
      ca: f.serviceCa,
      ...(options.identity ? { key: device.key, cert: device.cert } : {}),
    });
    const chunks: Buffer[] = [];
    socket.on('secureConnect', () => socket.write(request + body));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

describe('every device-link answer spells its header names canonically (libest compares bytes)', () => {
  it('manifest, cacerts, csrattrs, enroll, report, and the 400/401/404/405/415 refusals', async () => {
    const csr = (await freshCsr()).base64;
    const report = JSON.stringify({ results: [{ name: 'fio-device-gateway-ca', status: 'SUCCESS' }] });
    const calls: Array<[string, string, string, string, boolean]> = [
      ['GET', '/device-link/v1/manifest', '', '', true],
      ['GET', '/.well-known/est/cacerts', '', '', false],
      ['GET', '/.well-known/est/csrattrs', '', '', false],
      ['POST', '/.well-known/est/simpleenroll', 'application/pkcs10', csr, true],
      ['POST', '/device-link/v1/report', 'application/json', report, true],
      ['POST', '/.well-known/est/simpleenroll', 'application/pkcs10', 'AAAA', true],
      ['POST', '/.well-known/est/simpleenroll', 'text/plain', csr, true],
      ['GET', '/device-link/v1/manifest', '', '', false],
      ['GET', '/no/such/path', '', '', true],
      ['POST', '/.well-known/est/cacerts', '', '', true],
    ];
    const statuses: number[] = [];
    for (const [method, path, type, body, identity] of calls) {
      const request =
        `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n` +
        (type ? `Content-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` : '') +
        '\r\n';
      const raw = await rawCall(request, body, { identity });
      statuses.push(Number(raw.toString('latin1').slice(9, 12)));
      const names = headerNames(raw);
      expect(names, `${method} ${path}`).toContain('Content-Type');
      expect(names).toContain('X-Correlation-Id');
      for (const name of names) expect(name, `${method} ${path}`).toBe(canonical(name));
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 400, 415, 401, 404, 405]);
  });

  it('Retry-After, Allow and WWW-Authenticate as the problem renderer writes them', async () => {
    const server = createServer((req, res) => {
      const error =
        req.url === '/429'
          ? new KeyferryError('rate_limited', 'slow down')
          : req.url === '/405'
            ? new KeyferryError('method_not_allowed', 'GET only', { detail: { allow: 'GET' } })
            : new KeyferryError('unauthenticated', 'no client certificate');
      sendProblem(res, error, 'c0ffee');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port: local } = server.address() as { port: number };
    try {
      const seen = new Map<string, string[]>();
      for (const path of ['/429', '/405', '/401']) {
        const raw = await new Promise<Buffer>((resolve, reject) => {
          const socket = netConnect(local, '127.0.0.1', () =>
            socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
          );
          const chunks: Buffer[] = [];
          socket.on('data', (c: Buffer) => chunks.push(c));
          socket.on('end', () => resolve(Buffer.concat(chunks)));
          socket.on('error', reject);
        });
        seen.set(path, headerNames(raw));
      }
      expect(seen.get('/429')).toContain('Retry-After');
      expect(seen.get('/405')).toContain('Allow');
      expect(seen.get('/401')).toContain('WWW-Authenticate');
      for (const names of seen.values()) for (const name of names) expect(name).toBe(canonical(name));
    } finally {
      server.close();
    }
  });
});
