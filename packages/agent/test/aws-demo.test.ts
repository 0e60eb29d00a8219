import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import {
  DescribeThingCommand,
  GetRegistrationCodeCommand,
  ListCertificatesCommand,
  RegisterCACertificateCommand,
  RegisterCertificateCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { issueCertificate, issuerFromCertificate, validityFor } from '@keyferry/core';
import { releaseModule } from '@keyferry/pkcs11';
import { createSecureElement, loadOrCreateVendorCa } from '@keyferry/sim';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS } from '../../../test/support/processes.ts';
import { createSofthsmEnv, type SofthsmEnv } from '../../../test/support/softhsm.ts';
import {
  connectMqtt,
  issueLeaf,
  makeCa,
  startTestEmulator,
  type TestCa,
  type TestEmulator,
} from '../../sim/test/aws-iot-support.ts';
import { EXIT_CODES } from '../src/agent-error.ts';
import { AWS_CERT_ID, AWS_KEY_ID } from '../src/aws-demo.ts';
import { Pkcs11SecureElement } from '../src/se/pkcs11-se.ts';
import type { SecureElement } from '../src/se/port.ts';
import { SoftSecureElement } from '../src/se/soft-se.ts';
import { runAgentAsync } from './support/agent-bin.ts';
import { serverPki } from './support/server-pki.ts';

const PRODUCT = '935389312472';
const TEMPLATE = JSON.stringify({
  Parameters: {
    'AWS::IoT::Certificate::CommonName': { Type: 'String' },
    'AWS::IoT::Certificate::Id': { Type: 'String' },
  },
  Resources: {
    thing: {
      Type: 'AWS::IoT::Thing',
      Properties: { ThingName: { Ref: 'AWS::IoT::Certificate::CommonName' } },
    },
    certificate: {
      Type: 'AWS::IoT::Certificate',
      Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'ACTIVE' },
    },
  },
});

let t: TestEmulator;
let work: string;
let softhsm: SofthsmEnv;
let watcher: MqttClient;
const received: string[] = [];

/** A simulated SE05x holding an AWS pair: key generated in it at 0x83000044, certificate from `ca` at 0x83000045. */
async function provisionAws(se: SecureElement, ca: TestCa, cn: string): Promise<void> {
  const spki = se.generateKeyPair(AWS_KEY_ID);
  const der = await issueCertificate({
    issuer: issuerFromCertificate(ca.der),
    subject: { OU: 'demo', CN: cn },
    subjectPublicKeySpki: spki,
    ...validityFor(new Date(), { years: 1 }),
    extensions: {
      basicConstraints: { ca: false },
      keyUsage: ['digitalSignature'],
      extKeyUsage: ['clientAuth'],
    },
    signer: ca.signer,
  });
  se.putCertificate(AWS_CERT_ID, der);
}

async function registerCa(name: string, templateBody?: string): Promise<TestCa> {
  const ca = await makeCa(name);
  const { registrationCode } = await t.iot.send(new GetRegistrationCodeCommand({}));
  const verification = await issueLeaf(ca, { CN: registrationCode as string });
  await t.iot.send(
    new RegisterCACertificateCommand({
      caCertificate: ca.pem,
      verificationCertificate: verification.certPem,
      setAsActive: true,
      allowAutoRegistration: true,
      ...(templateBody === undefined
        ? {}
        : { registrationConfig: { templateBody, roleArn: 'arn:aws:iam::123456789012:role/JITPRole' } }),
    }),
  );
  return ca;
}

function awsDemo(env: NodeJS.ProcessEnv, args: string[] = []) {
  return runAgentAsync(
    ['aws-demo', '--endpoint', t.emulator.mqttEndpoint, '--ca', t.emulator.serverCaFile, ...args],
    {
      SOFTHSM2_CONF: softhsm.conf,
      ...env,
    },
  );
}

const JITP_LINE = 'AWS IoT registered the certificate (JITP) and closed the connection; retrying in 0 s';
const connecting = (cn: string) =>
  expect.stringMatching(
    new RegExp(`^Connecting to ${t.emulator.mqttEndpoint} as [0-9a-f-]{36} with SE_83000045 \\(CN ${cn}\\)$`),
  );
const published = expect.stringMatching(/^Published \{"time": \d{10}(\.\d+)?\} to se050\/demo \(QoS 1\)$/);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'keyferry-aws-demo-'));
  softhsm = createSofthsmEnv({ setProcessEnv: true });
  t = await startTestEmulator();
  const ca = await registerCa('watcher CA');
  const watcherLeaf = await issueLeaf(ca, { CN: 'watcher' });
  await t.iot.send(
    new RegisterCertificateCommand({
      certificatePem: watcherLeaf.certPem,
      caCertificatePem: ca.pem,
      status: 'ACTIVE',
    }),
  );
  const connected = await connectMqtt(t.emulator, watcherLeaf, 'watcher');
  if (!connected.connected) throw new Error(`watcher: ${connected.error}`);
  watcher = connected.client;
  await watcher.subscribeAsync('se050/demo', { qos: 1 });
  watcher.on('message', (_topic, payload) => received.push(payload.toString()));
}, 60_000);

afterAll(async () => {
  watcher?.end(true);
  await t?.close();
  if (softhsm) {
    releaseModule(softhsm.module);
    softhsm.cleanup();
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('keyferry-agent aws-demo against the AWS IoT emulator', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('JITP (PKCS#11 key through the OpenSSL engine): hung up once, says so, retries, publishes; the Thing is the CN', async () => {
    const vendor = await loadOrCreateVendorCa(join(work, 'vendor'));
    await createSecureElement({
      vendor,
      product: PRODUCT,
      backend: { kind: 'pkcs11', module: softhsm.module },
    });
    const se = new Pkcs11SecureElement({
      module: softhsm.module,
      tokenLabel: 'aktualizr',
      pin: '87654321',
      genericKeypairs: [AWS_KEY_ID],
    });
    const cn = '04005001aaaaaaaaaaaaaaaaaaaaaaaaaaaa';
    try {
      await provisionAws(se, await registerCa('jitp CA', TEMPLATE), cn);
    } finally {
      se.close();
    }
    const before = received.length;
    const res = await awsDemo({ PKCS11_MODULE: softhsm.module }, ['--retry-delay', '0']);
    expect(res.stderr).toBe('');
    expect(res.stdout.trimEnd().split('\n')).toEqual([connecting(cn), JITP_LINE, connecting(cn), published]);
    expect(res.status).toBe(0);
    await expect.poll(() => received.length).toBe(before + 1);
    const payload = JSON.parse(received.at(-1)!) as { time: number };
    expect(res.stdout).toContain(`Published ${received.at(-1)} to se050/demo`);
    expect(Math.abs(payload.time - Date.now() / 1000)).toBeLessThan(600);
    const thing = await t.iot.send(new DescribeThingCommand({ thingName: cn }));
    expect(thing.thingName).toBe(cn);

    // The certificate is active now: the next run connects at once.
    const again = await awsDemo({ PKCS11_MODULE: softhsm.module });
    expect(again.stdout.trimEnd().split('\n')).toEqual([connecting(cn), published]);
    expect(again.status).toBe(0);
  });

  it('manual registration (soft SE): refused after the retry until UpdateCertificate ACTIVE, then publishes', async () => {
    const vendor = await loadOrCreateVendorCa(join(work, 'vendor'));
    const dir = join(work, 'manual-se');
    await createSecureElement({ vendor, product: PRODUCT, backend: { kind: 'dir', dir } });
    const se = new SoftSecureElement(dir);
    await provisionAws(se, await registerCa('manual CA'), 'manual-device');
    const env = { SE_BACKEND: 'soft', SE_DIR: dir, AWS_RETRY_DELAY: '0' };

    const refused = await awsDemo(env);
    expect(refused.stdout.trimEnd().split('\n')).toEqual([
      connecting('manual-device'),
      JITP_LINE,
      connecting('manual-device'),
    ]);
    expect(refused.stderr).toMatch(
      /^ERROR: AWS IoT at \S+ closed the connection again before accepting it: the certificate is not active \(PENDING_ACTIVATION until .*update-certificate --new-status ACTIVE/,
    );
    expect(refused.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(refused.status).toBe(EXIT_CODES.refused);
    const listed = await t.iot.send(new ListCertificatesCommand({}));
    const pending = listed.certificates?.filter((c) => c.status === 'PENDING_ACTIVATION') ?? [];
    expect(pending).toHaveLength(1);
    await expect(t.iot.send(new DescribeThingCommand({ thingName: 'manual-device' }))).rejects.toThrow(
      /manual-device/,
    );

    await t.iot.send(
      new UpdateCertificateCommand({ certificateId: pending[0]!.certificateId!, newStatus: 'ACTIVE' }),
    );
    const before = received.length;
    const ok = await awsDemo(env);
    expect(ok.stdout.trimEnd().split('\n')).toEqual([connecting('manual-device'), published]);
    expect(ok.status).toBe(0);
    await expect.poll(() => received.length).toBe(before + 1);
  });

  it('refuses with one ERROR line and its exit code: no AWS pair, bad endpoint, unreachable, untrusted server', async () => {
    const vendor = await loadOrCreateVendorCa(join(work, 'vendor'));
    const dir = join(work, 'bare-se');
    await createSecureElement({ vendor, product: PRODUCT, backend: { kind: 'dir', dir } });
    const soft = { SE_BACKEND: 'soft', SE_DIR: dir };
    const otherCa = join(work, 'other-ca.pem');
    writeFileSync(otherCa, (await makeCa('not the server CA')).pem);
    const cases: Array<[NodeJS.ProcessEnv, string[], number, RegExp]> = [
      [
        soft,
        [],
        EXIT_CODES.aws_not_provisioned,
        /^ERROR: soft secure element \S+ has no AWS IoT key SE_83000044 \(0x83000044\): run keyferry el2g config-aws-iot on the host, then keyferry-agent auto-register on the device\n$/,
      ],
      [
        { ...soft, AWS_ENDPOINT: 'host:99999' },
        [],
        EXIT_CODES.setting_invalid,
        /^ERROR: endpoint "host:99999" is not HOST\[:PORT\]/,
      ],
      [
        soft,
        ['--retry-delay', 'soon'],
        EXIT_CODES.setting_invalid,
        /^ERROR: --retry-delay is "soon"; give seconds, 0 to 3600\n$/,
      ],
    ];
    const runs = await Promise.all([
      ...cases.map(([env, args]) =>
        runAgentAsync(
          ['aws-demo', ...(env.AWS_ENDPOINT ? [] : ['--endpoint', t.emulator.mqttEndpoint]), ...args],
          env,
        ),
      ),
      runAgentAsync(['aws-demo'], { ...soft, AWS_ENDPOINT: '' }),
    ]);
    for (const [i, [, , code, message]] of cases.entries()) {
      expect(runs[i]!.stderr).toMatch(message);
      expect(runs[i]!.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(runs[i]!.status).toBe(code);
    }
    const noEndpoint = runs[cases.length]!;
    expect(noEndpoint.stderr).toMatch(/^ERROR: aws-demo needs --endpoint HOST\[:PORT\] \(or AWS_ENDPOINT\)/);
    expect(noEndpoint.status).toBe(EXIT_CODES.setting_invalid);

    // A provisioned SE, then the network and the server's identity go wrong.
    await provisionAws(new SoftSecureElement(dir), await makeCa('unregistered CA'), 'bare');
    const [unreachable, untrusted, unreadable, foreign] = await Promise.all([
      runAgentAsync(['aws-demo', '--endpoint', '127.0.0.1:1', '--ca', t.emulator.serverCaFile], soft),
      runAgentAsync(['aws-demo', '--endpoint', t.emulator.mqttEndpoint, '--ca', otherCa], soft),
      runAgentAsync(
        ['aws-demo', '--endpoint', t.emulator.mqttEndpoint, '--ca', join(work, 'absent.pem')],
        soft,
      ),
      // Its CA is not registered at all: both attempts are hung up, then refused.
      runAgentAsync(
        [
          'aws-demo',
          '--endpoint',
          t.emulator.mqttEndpoint,
          '--ca',
          t.emulator.serverCaFile,
          '--retry-delay',
          '0',
        ],
        soft,
      ),
    ]);
    expect(unreachable.stderr).toBe(
      'ERROR: cannot reach AWS IoT endpoint 127.0.0.1:1 (ECONNREFUSED); check --endpoint and the network\n',
    );
    expect(unreachable.status).toBe(EXIT_CODES.transient);
    expect(untrusted.stderr).toMatch(
      /^ERROR: the certificate of AWS IoT endpoint \S+ does not verify \([A-Z_]+\): name the CA that signs it with --ca FILE or AWS_ROOT_CA/,
    );
    expect(untrusted.status).toBe(EXIT_CODES.server_untrusted);
    expect(unreadable.stderr).toMatch(/^ERROR: AWS IoT CA file \S+absent\.pem: ENOENT/);
    expect(unreadable.status).toBe(EXIT_CODES.file_unreadable);
    expect(foreign.stderr).toMatch(/^ERROR: AWS IoT at \S+ closed the connection again before accepting it/);
    expect(foreign.status).toBe(EXIT_CODES.refused);
  });
  it('an endpoint that never answers is transient (75), named for where it went silent, not "not active"', async () => {
    const vendor = await loadOrCreateVendorCa(join(work, 'vendor'));
    const dir = join(work, 'silent-se');
    await createSecureElement({ vendor, product: PRODUCT, backend: { kind: 'dir', dir } });
    await provisionAws(new SoftSecureElement(dir), await makeCa('silent CA'), 'silent');
    const soft = { SE_BACKEND: 'soft', SE_DIR: dir };
    const pki = await serverPki(['localhost']);
    const caFile = join(work, 'silent-server-ca.pem');
    writeFileSync(caFile, pki.caPem);
    // one completes TLS and never sends CONNACK; the other accepts TCP and never speaks TLS
    const held: Socket[] = [];
    const mqttSilent = createTlsServer({ key: pki.keyPem, cert: pki.certPem }, (socket) => held.push(socket));
    const tlsSilent = createNetServer((socket) => held.push(socket));
    const port = async (server: NetServer) => {
      await new Promise<void>((resolve) => server.listen(0, resolve));
      return (server.address() as AddressInfo).port;
    };
    try {
      const [noConnack, noHandshake, badTimeout] = await Promise.all([
        runAgentAsync(
          [
            'aws-demo',
            '--endpoint',
            `localhost:${await port(mqttSilent)}`,
            '--ca',
            caFile,
            '--connect-timeout',
            '1',
          ],
          soft,
        ),
        runAgentAsync(['aws-demo', '--endpoint', `localhost:${await port(tlsSilent)}`, '--ca', caFile], {
          ...soft,
          AWS_CONNECT_TIMEOUT: '1',
        }),
        runAgentAsync(['aws-demo', '--endpoint', 'localhost', '--connect-timeout', '0'], soft),
      ]);
      expect(noConnack.stderr).toMatch(
        /^ERROR: AWS IoT at localhost:\d+ completed TLS but sent no CONNACK within 1 s; retry later, or give it longer with --connect-timeout\n$/,
      );
      expect(noConnack.status).toBe(EXIT_CODES.transient);
      expect(noHandshake.stderr).toMatch(
        /^ERROR: AWS IoT endpoint localhost:(\d+) did not complete a TLS handshake within 1 s; check --endpoint and the network \(is port \1 let through\?\)\n$/,
      );
      expect(noHandshake.status).toBe(EXIT_CODES.transient);
      expect(badTimeout.stderr).toBe('ERROR: --connect-timeout is "0"; give seconds, 1 to 600\n');
      expect(badTimeout.status).toBe(EXIT_CODES.setting_invalid);
    } finally {
      for (const socket of held) socket.destroy();
      mqttSilent.close();
      tlsSilent.close();
    }
  });
});
