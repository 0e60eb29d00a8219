import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as connectTcp } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkServerIdentity, connect as connectTls } from 'node:tls';
import {
  DescribeEndpointCommand,
  DescribeThingCommand,
  GetRegistrationCodeCommand,
  IoTClient,
  ListAttachedPoliciesCommand,
  ListCertificatesCommand,
  ListThingPrincipalsCommand,
  RegisterCACertificateCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand } from '../../../test/support/processes.ts';
import { startAwsIotEmulator } from '../src/aws-iot/emulator.ts';
import { DEFAULT_CREDENTIALS } from '../src/aws-iot/sigv4.ts';
import {
  connectMqtt,
  issueLeaf,
  makeCa,
  outcomeAfter,
  startTestEmulator,
  type TestCa,
  type TestEmulator,
  type TestLeaf,
} from './aws-iot-support.ts';

const ROLE = 'arn:aws:iam::123456789012:role/JITPRole';
// The template of AWS's JITP guide: thing named after the CN, certificate ACTIVE, a policy.
const TEMPLATE = JSON.stringify({
  Parameters: {
    'AWS::IoT::Certificate::CommonName': { Type: 'String' },
    'AWS::IoT::Certificate::Country': { Type: 'String', Default: 'NL' },
    'AWS::IoT::Certificate::Id': { Type: 'String' },
  },
  Resources: {
    thing: {
      Type: 'AWS::IoT::Thing',
      Properties: {
        ThingName: { Ref: 'AWS::IoT::Certificate::CommonName' },
        AttributePayload: { version: 'v1', country: { Ref: 'AWS::IoT::Certificate::Country' } },
      },
    },
    certificate: {
      Type: 'AWS::IoT::Certificate',
      Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'ACTIVE' },
    },
    policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'se050-demo' } },
  },
});

let t: TestEmulator;
const clients: MqttClient[] = [];

async function registerCa(
  name: string,
  options: { templateBody?: string; autoRegistration: boolean },
): Promise<{ ca: TestCa; id: string }> {
  const ca = await makeCa(name);
  const { registrationCode } = await t.iot.send(new GetRegistrationCodeCommand({}));
  const verification = await issueLeaf(ca, { CN: registrationCode as string });
  const out = await t.iot.send(
    new RegisterCACertificateCommand({
      caCertificate: ca.pem,
      verificationCertificate: verification.certPem,
      setAsActive: true,
      allowAutoRegistration: options.autoRegistration,
      ...(options.templateBody === undefined
        ? {}
        : { registrationConfig: { templateBody: options.templateBody, roleArn: ROLE } }),
    }),
  );
  return { ca, id: out.certificateId as string };
}

async function connected(leaf: TestLeaf, clientId: string): Promise<MqttClient> {
  const result = await connectMqtt(t.emulator, leaf, clientId);
  if (!result.connected) throw new Error(`expected ${clientId} to connect: ${result.error}`);
  clients.push(result.client);
  return result.client;
}

function nextMessage(client: MqttClient, topic: string): Promise<{ topic: string; payload: string }> {
  return new Promise((resolve) => {
    client.on('message', (received, payload) => {
      if (received === topic) resolve({ topic: received, payload: payload.toString() });
    });
  });
}

beforeAll(async () => {
  t = await startTestEmulator();
});
afterAll(async () => {
  for (const client of clients) client.end(true);
  await t.close();
});

/** DescribeEndpoint's answer, asked of the control plane at `url` with the AWS SDK. */
async function describedEndpoint(url: string): Promise<string | undefined> {
  const iot = new IoTClient({
    endpoint: url,
    region: 'us-east-1',
    credentials: DEFAULT_CREDENTIALS,
    maxAttempts: 1,
  });
  try {
    return (await iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }))).endpointAddress;
  } finally {
    iot.destroy();
  }
}

describe('AWS IoT emulator data plane (MQTT over TLS, JITP)', () => {
  it('JITP: the first connection is dropped, the template runs, the next connection is accepted', async () => {
    const { ca, id: caId } = await registerCa('JITP CA', { templateBody: TEMPLATE, autoRegistration: true });
    // A subscriber needs its own accepted certificate: register one by hand.
    const watcherCert = await issueLeaf(ca, { CN: 'watcher' });
    await connectMqtt(t.emulator, watcherCert, 'watcher-first'); // JITP provisions it too
    const watcher = await connected(watcherCert, 'watcher');
    await watcher.subscribeAsync([`$aws/events/certificates/registered/${caId}`, 'se050/demo'], { qos: 1 });
    const registered = nextMessage(watcher, `$aws/events/certificates/registered/${caId}`);

    const device = await issueLeaf(ca, { C: 'DE', CN: 'se050-0400500112345678' });
    const first = await connectMqtt(t.emulator, device, 'se050-0400500112345678');
    expect(first.connected).toBe(false);
    expect(t.outcomes.at(-1)).toMatchObject({
      kind: 'jitp',
      caCertificateId: caId,
      provisioned: 'template applied: thing se050-0400500112345678, certificate ACTIVE, policies se050-demo',
    });

    const event = JSON.parse((await registered).payload) as Record<string, unknown>;
    expect(event).toMatchObject({
      caCertificateId: caId,
      certificateStatus: 'PENDING_ACTIVATION',
      awsAccountId: '123456789012',
    });
    const certificateId = event.certificateId as string;

    const thing = await t.iot.send(new DescribeThingCommand({ thingName: 'se050-0400500112345678' }));
    expect(thing.attributes).toEqual({ version: 'v1', country: 'DE' });
    const principals = await t.iot.send(
      new ListThingPrincipalsCommand({ thingName: 'se050-0400500112345678' }),
    );
    expect(principals.principals).toEqual([`arn:aws:iot:us-east-1:123456789012:cert/${certificateId}`]);
    const policies = await t.iot.send(
      new ListAttachedPoliciesCommand({ target: principals.principals?.[0] as string }),
    );
    expect(policies.policies?.map((p) => p.policyName)).toEqual(['se050-demo']);
    const listed = await t.iot.send(new ListCertificatesCommand({}));
    expect(listed.certificates?.find((c) => c.certificateId === certificateId)?.status).toBe('ACTIVE');

    const publisher = await connected(device, 'se050-0400500112345678');
    const message = nextMessage(watcher, 'se050/demo');
    await publisher.publishAsync('se050/demo', JSON.stringify({ time: 1_764_000_000 }), { qos: 1 });
    expect(JSON.parse((await message).payload)).toEqual({ time: 1_764_000_000 });
  });

  it('QoS 2 as AWS IoT Core: a SUBSCRIBE asking for it is granted QoS 1, a PUBLISH with it closes the connection', async () => {
    const { ca } = await registerCa('QoS CA', { templateBody: TEMPLATE, autoRegistration: true });
    const device = await issueLeaf(ca, { CN: 'qos-device' });
    await connectMqtt(t.emulator, device, 'qos-first'); // JITP makes it ACTIVE
    const client = await connected(device, 'qos-device');
    const granted = await client.subscribeAsync(['qos/two', 'qos/zero'], { qos: 2 });
    expect(granted.map((g) => [g.topic, g.qos])).toEqual([
      ['qos/two', 1],
      ['qos/zero', 1],
    ]);
    expect((await client.subscribeAsync('qos/zero', { qos: 0 }))[0]?.qos).toBe(0);
    // QoS 1 is delivered as before
    const message = nextMessage(client, 'qos/two');
    await client.publishAsync('qos/two', 'one', { qos: 1 });
    expect((await message).payload).toBe('one');

    const certificateId = (t.outcomes.at(-1) as { certificateId: string }).certificateId;
    const seen = t.outcomes.length;
    const closed = new Promise((resolve) => client.once('close', () => resolve('closed')));
    const acknowledged = client.publishAsync('qos/two', 'two', { qos: 2 }).then(
      () => 'acknowledged',
      () => 'closed',
    );
    expect(await Promise.race([closed, acknowledged])).toBe('closed');
    expect(await outcomeAfter(t, seen)).toEqual({
      kind: 'dropped',
      certificateId,
      reason:
        'PUBLISH with QoS 2 to qos/two: AWS IoT Core supports QoS 0 and 1 only and closes the connection; publish with QoS 0 or 1',
    });
  });

  it('manual path: without a template the certificate stays PENDING_ACTIVATION until UpdateCertificate', async () => {
    const { ca } = await registerCa('manual CA', { autoRegistration: true });
    const device = await issueLeaf(ca, { CN: 'manual-device' });
    expect((await connectMqtt(t.emulator, device, 'manual-1')).connected).toBe(false);
    const record = [...t.emulator.registry.certificates.values()].find(
      (c) => c.cert.subjectAttributes.CN === 'manual-device',
    );
    expect(record?.status).toBe('PENDING_ACTIVATION');
    expect(t.emulator.registry.things.has('manual-device')).toBe(false);

    expect(t.outcomes.at(-1)).toMatchObject({
      kind: 'jitp',
      provisioned: expect.stringMatching(/no provisioning template/),
    });
    const again = await connectMqtt(t.emulator, device, 'manual-2');
    expect(again).toEqual({ connected: false, error: expect.any(String) });
    expect(t.outcomes.at(-1)).toEqual({
      kind: 'refused',
      reason: 'certificate is PENDING_ACTIVATION',
      certificateId: record?.id,
    });
    expect(record?.status).toBe('PENDING_ACTIVATION');
    expect(
      [...t.emulator.registry.certificates.values()].filter(
        (c) => c.cert.subjectAttributes.CN === 'manual-device',
      ),
    ).toHaveLength(1);

    await t.iot.send(
      new UpdateCertificateCommand({ certificateId: record?.id as string, newStatus: 'ACTIVE' }),
    );
    await connected(device, 'manual-3');
  });

  it('a template whose parameters the certificate lacks changes nothing; the certificate stays PENDING_ACTIVATION', async () => {
    const template = JSON.stringify({
      Parameters: { 'AWS::IoT::Certificate::SerialNumber': { Type: 'String' } },
      Resources: {
        thing: {
          Type: 'AWS::IoT::Thing',
          Properties: { ThingName: { Ref: 'AWS::IoT::Certificate::SerialNumber' } },
        },
      },
    });
    const { ca } = await registerCa('serial CA', { templateBody: template, autoRegistration: true });
    const things = t.emulator.registry.things.size;
    expect(
      (await connectMqtt(t.emulator, await issueLeaf(ca, { CN: 'no-serial' }), 'no-serial')).connected,
    ).toBe(false);
    expect(t.outcomes.at(-1)).toMatchObject({
      kind: 'jitp',
      provisioned:
        'template failed, the certificate stays PENDING_ACTIVATION: the certificate has no value for template parameter AWS::IoT::Certificate::SerialNumber and it has no Default',
    });
    const record = t.emulator.registry.certificate(
      (t.outcomes.at(-1) as { certificateId: string }).certificateId,
    );
    expect(record.status).toBe('PENDING_ACTIVATION');
    expect(t.emulator.registry.things.size).toBe(things);
  });

  it('refuses a certificate whose CA does not allow auto-registration until it is registered', async () => {
    const { ca } = await registerCa('no-auto CA', { autoRegistration: false });
    const device = await issueLeaf(ca, { CN: 'no-auto-device' });
    const before = t.emulator.registry.certificates.size;
    expect((await connectMqtt(t.emulator, device, 'no-auto')).connected).toBe(false);
    expect(t.outcomes.at(-1)).toEqual({
      kind: 'refused',
      reason: 'certificate is not registered and its CA does not allow auto-registration',
    });
    expect(t.emulator.registry.certificates.size).toBe(before);
  });

  it('refuses a certificate from an unregistered CA and registers nothing', async () => {
    const stranger = await issueLeaf(await makeCa('unregistered CA'), { CN: 'stranger' });
    const before = t.emulator.registry.certificates.size;
    const result = await connectMqtt(t.emulator, stranger, 'stranger');
    expect(result.connected).toBe(false);
    expect(t.outcomes.at(-1)).toEqual({
      kind: 'refused',
      reason: 'client certificate is not issued by a registered ACTIVE CA certificate',
    });
    expect(t.emulator.registry.certificates.size).toBe(before);
    expect(t.emulator.registry.things.has('stranger')).toBe(false);
  });

  it('a template that cannot be applied (a thing name with spaces, Properties null) is a JITP whose template failed', async () => {
    const spaced = await registerCa('spaced CA', { templateBody: TEMPLATE, autoRegistration: true });
    const things = t.emulator.registry.things.size;
    const device = await issueLeaf(spaced.ca, { CN: 'my device 1' });
    expect((await connectMqtt(t.emulator, device, 'my-device-1')).connected).toBe(false);
    const outcome = t.outcomes.at(-1) as { certificateId: string };
    expect(outcome).toEqual({
      kind: 'jitp',
      certificateId: outcome.certificateId,
      caCertificateId: spaced.id,
      provisioned:
        'template failed, the certificate stays PENDING_ACTIVATION: Resources.thing.Properties.ThingName: thing name "my device 1" is not [a-zA-Z0-9:_-]{1,128}',
    });
    expect(t.emulator.registry.certificate(outcome.certificateId).status).toBe('PENDING_ACTIVATION');
    expect(t.emulator.registry.things.size).toBe(things);

    const nullProperties = JSON.stringify({
      Resources: { certificate: { Type: 'AWS::IoT::Certificate', Properties: null } },
    });
    const { ca } = await registerCa('null properties CA', {
      templateBody: nullProperties,
      autoRegistration: true,
    });
    expect(
      (await connectMqtt(t.emulator, await issueLeaf(ca, { CN: 'null-props' }), 'null-props')).connected,
    ).toBe(false);
    expect(t.outcomes.at(-1)).toMatchObject({
      kind: 'jitp',
      provisioned:
        'template failed, the certificate stays PENDING_ACTIVATION: Resources.certificate.Properties.CertificateId: only strings, Ref, Fn::Join and Fn::Sub are emulated',
    });
  });

  it('refuses the registered CA certificate, or another CA certificate, as a device certificate and registers nothing', async () => {
    const { ca, id } = await registerCa('self-presenting CA', { autoRegistration: true });
    const before = t.emulator.registry.certificates.size;
    const itself = { certPem: ca.pem, keyPem: ca.keyPem, der: ca.der };
    expect((await connectMqtt(t.emulator, itself, 'ca-itself')).connected).toBe(false);
    expect(t.outcomes.at(-1)).toEqual({
      kind: 'refused',
      reason: `client certificate is the registered CA certificate ${id}; connect with a device certificate it issued`,
    });
    const intermediate = await issueLeaf(ca, { CN: 'intermediate CA' }, { asCa: true });
    expect((await connectMqtt(t.emulator, intermediate, 'intermediate')).connected).toBe(false);
    expect(t.outcomes.at(-1)).toEqual({
      kind: 'refused',
      reason:
        'client certificate is a CA certificate (basicConstraints CA:TRUE); connect with a device certificate',
    });
    expect(t.emulator.registry.certificates.size).toBe(before);
  });

  it('reports connections that fail in the TLS handshake: plain MQTT on the TLS port, a device not trusting the server CA', async () => {
    const before = t.emulator.registry.certificates.size;
    // mqtt:// on the TLS port: an MQTT CONNECT where a TLS ClientHello should be
    const [host, port] = t.emulator.mqttEndpoint.split(':') as [string, string];
    let seen = t.outcomes.length;
    const plain = connectTcp(Number(port), host);
    plain.on('error', () => {});
    await once(plain, 'connect');
    plain.write(Buffer.from('100c00044d5154540402003c0000', 'hex'));
    await once(plain, 'close');
    expect(await outcomeAfter(t, seen)).toEqual({
      kind: 'refused',
      reason: 'TLS handshake failed: wrong version number',
    });
    // openssl verifies the server during the handshake and sends an alert, as device TLS
    // stacks do (Node's client checks only after the handshake and just hangs up)
    const { ca } = await registerCa('handshake CA', { autoRegistration: true });
    const device = await issueLeaf(ca, { CN: 'handshake-device' });
    const files = mkdtempSync(join(tmpdir(), 'keyferry-handshake-'));
    const file = (name: string, text: string) => {
      writeFileSync(join(files, name), text);
      return join(files, name);
    };
    seen = t.outcomes.length;
    const res = await runCommand('openssl', [
      's_client',
      '-connect',
      t.emulator.mqttEndpoint,
      '-CAfile',
      file('other-ca.pem', (await makeCa('other')).pem),
      '-verify_return_error',
      '-cert',
      file('device.pem', device.certPem),
      '-key',
      file('device.key', device.keyPem),
    ]);
    rmSync(files, { recursive: true, force: true });
    expect(res.status).not.toBe(0);
    expect(await outcomeAfter(t, seen)).toEqual({
      kind: 'refused',
      reason: 'TLS handshake failed: tlsv1 alert unknown ca',
    });
    expect(t.emulator.registry.certificates.size).toBe(before);
  });
});

describe('AWS IoT emulator on a wildcard MQTT address', () => {
  it('advertises the host name for a control plane listening on 0.0.0.0, not 0.0.0.0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keyferry-aws-iot-wildcard-control-'));
    const emulator = await startAwsIotEmulator({ stateDir: dir, listen: { host: '0.0.0.0', port: 0 } });
    try {
      const port = Number(new URL(emulator.controlUrl).port);
      expect(emulator.controlUrl).toBe(`http://${hostname()}:${port}`);
      expect(JSON.parse(readFileSync(join(dir, 'endpoints.json'), 'utf8')).controlUrl).toBe(
        emulator.controlUrl,
      );
      expect(await describedEndpoint(`http://127.0.0.1:${port}`)).toBe(emulator.mqttEndpoint);
    } finally {
      await emulator.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('advertises the host name (or --mqtt-host), not 0.0.0.0, and its certificate names it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keyferry-aws-iot-wildcard-'));
    try {
      for (const [mqttHost, advertised] of [
        [undefined, hostname()],
        ['devices.example.test', 'devices.example.test'],
      ] as const) {
        const emulator = await startAwsIotEmulator({
          stateDir: dir,
          mqttListen: { host: '0.0.0.0', port: 0 },
          ...(mqttHost === undefined ? {} : { mqttHost }),
        });
        try {
          const port = Number(emulator.mqttEndpoint.split(':').at(-1));
          expect(emulator.mqttEndpoint).toBe(`${advertised}:${port}`);
          expect(JSON.parse(readFileSync(join(dir, 'endpoints.json'), 'utf8')).mqttEndpoint).toBe(
            emulator.mqttEndpoint,
          );
          expect(await describedEndpoint(emulator.controlUrl)).toBe(emulator.mqttEndpoint);
          // a device that checks the name it was given: the server certificate must carry it
          const socket = connectTls({
            host: '127.0.0.1',
            port,
            servername: advertised,
            ca: readFileSync(emulator.serverCaFile),
            checkServerIdentity: (_host, cert) => checkServerIdentity(advertised, cert),
          });
          const verified = await new Promise<string>((resolve) => {
            socket.once('secureConnect', () => resolve('verified'));
            socket.once('error', (error) => resolve(error.message));
          });
          socket.destroy();
          expect(verified).toBe('verified');
        } finally {
          await emulator.close();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('AWS IoT emulator close()', () => {
  it('removes endpoints.json, and a new start does not leave the old one readable before it listens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keyferry-aws-iot-endpoints-'));
    try {
      const file = join(dir, 'endpoints.json');
      writeFileSync(file, '{"controlUrl": "http://127.0.0.1:1"}\n');
      const emulator = await startAwsIotEmulator({ stateDir: dir });
      expect(JSON.parse(readFileSync(file, 'utf8')).controlUrl).toBe(emulator.controlUrl);
      await emulator.close();
      expect(existsSync(file)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ends while a client is still in its TLS handshake (Node would wait 120 s for it)', async () => {
    const own = await startTestEmulator();
    const [host, port] = own.emulator.mqttEndpoint.split(':') as [string, string];
    const raw = connectTcp(Number(port), host);
    await once(raw, 'connect');
    const closed = once(raw, 'close');
    await own.close();
    await closed;
    expect(raw.destroyed).toBe(true);
  });
});
