import { request } from 'node:http';
import {
  DescribeCACertificateCommand,
  DescribeEndpointCommand,
  DescribeThingCommand,
  GetRegistrationCodeCommand,
  IoTClient,
  ListCACertificatesCommand,
  ListCertificatesCommand,
  ListThingsCommand,
  RegisterCACertificateCommand,
  RegisterCertificateCommand,
  UpdateCACertificateCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_BODY_BYTES } from '../src/aws-iot/control-plane.ts';
import { DEFAULT_CREDENTIALS } from '../src/aws-iot/sigv4.ts';
import { issueLeaf, makeCa, startTestEmulator, type TestCa, type TestEmulator } from './aws-iot-support.ts';

let t: TestEmulator;
let code: string;
let ca: TestCa;
let caId: string;

beforeAll(async () => {
  t = await startTestEmulator();
  ca = await makeCa('control plane CA');
});
afterAll(() => t.close());

async function caCount(): Promise<number> {
  return (await t.iot.send(new ListCACertificatesCommand({}))).certificates?.length ?? -1;
}

async function rejection(
  promise: Promise<unknown>,
): Promise<{ name: string; message: string; status: number | undefined }> {
  const error = (await promise.then(
    () => {
      throw new Error('expected the emulator to refuse');
    },
    (e: unknown) => e,
  )) as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
  return { name: error.name, message: error.message, status: error.$metadata?.httpStatusCode };
}

describe('AWS IoT emulator control plane with @aws-sdk/client-iot', () => {
  it('GetRegistrationCode gives the account one stable code', async () => {
    const first = await t.iot.send(new GetRegistrationCodeCommand({}));
    const second = await t.iot.send(new GetRegistrationCodeCommand({}));
    expect(first.registrationCode).toMatch(/^[0-9a-f]{64}$/);
    expect(second.registrationCode).toBe(first.registrationCode);
    code = first.registrationCode as string;
  });

  it('refuses a verification certificate whose CN is not the registration code', async () => {
    const verification = await issueLeaf(ca, { CN: 'not-the-code' });
    const error = await rejection(
      t.iot.send(
        new RegisterCACertificateCommand({
          caCertificate: ca.pem,
          verificationCertificate: verification.certPem,
          setAsActive: true,
        }),
      ),
    );
    expect(error).toMatchObject({ name: 'RegistrationCodeValidationException', status: 400 });
    expect(error.message).toMatch(/registration code/);
    expect(await caCount()).toBe(0);
  });

  it('refuses a verification certificate signed by another CA key', async () => {
    const other = await makeCa('control plane CA'); // same name, another key
    const verification = await issueLeaf(other, { CN: code });
    const error = await rejection(
      t.iot.send(
        new RegisterCACertificateCommand({
          caCertificate: ca.pem,
          verificationCertificate: verification.certPem,
          setAsActive: true,
        }),
      ),
    );
    expect(error).toMatchObject({ name: 'CertificateValidationException', status: 400 });
    expect(error.message).toMatch(/not signed by the key of caCertificate/);
    expect(await caCount()).toBe(0);
  });

  it('refuses a templateBody over 10,240 characters', async () => {
    const verification = await issueLeaf(ca, { CN: code });
    const templateBody = JSON.stringify({ Resources: {}, Padding: 'x'.repeat(10_240) });
    const error = await rejection(
      t.iot.send(
        new RegisterCACertificateCommand({
          caCertificate: ca.pem,
          verificationCertificate: verification.certPem,
          registrationConfig: { templateBody, roleArn: 'arn:aws:iam::123456789012:role/JITP' },
        }),
      ),
    );
    expect(error).toMatchObject({ name: 'InvalidRequestException', status: 400 });
    expect(error.message).toMatch(/limit is 10240/);
    expect(await caCount()).toBe(0);
  });

  it('registers a CA whose verification certificate carries the code, once', async () => {
    const verification = await issueLeaf(ca, { CN: code });
    const input = {
      caCertificate: ca.pem,
      verificationCertificate: verification.certPem,
      setAsActive: true,
      allowAutoRegistration: false,
    };
    const out = await t.iot.send(new RegisterCACertificateCommand(input));
    expect(out.certificateId).toBe(t.emulator.registry.cas.keys().next().value);
    expect(out.certificateArn).toBe(`arn:aws:iot:us-east-1:123456789012:cacert/${out.certificateId}`);
    caId = out.certificateId as string;

    const again = await rejection(t.iot.send(new RegisterCACertificateCommand(input)));
    expect(again).toMatchObject({ name: 'ResourceAlreadyExistsException', status: 409 });
    expect(await caCount()).toBe(1);
  });

  it('DescribeCACertificate, ListCACertificates and UpdateCACertificate', async () => {
    const before = await t.iot.send(new DescribeCACertificateCommand({ certificateId: caId }));
    expect(before.certificateDescription).toMatchObject({
      certificateId: caId,
      status: 'ACTIVE',
      autoRegistrationStatus: 'DISABLE',
      certificatePem: ca.pem,
      ownedBy: '123456789012',
      certificateMode: 'DEFAULT',
    });
    expect(before.certificateDescription?.creationDate).toBeInstanceOf(Date);
    expect(before.registrationConfig).toBeUndefined();

    const templateBody = JSON.stringify({ Resources: {} });
    await t.iot.send(
      new UpdateCACertificateCommand({
        certificateId: caId,
        newStatus: 'ACTIVE',
        newAutoRegistrationStatus: 'ENABLE',
        registrationConfig: { templateBody, roleArn: 'arn:aws:iam::123456789012:role/JITP' },
      }),
    );
    const after = await t.iot.send(new DescribeCACertificateCommand({ certificateId: caId }));
    expect(after.certificateDescription?.autoRegistrationStatus).toBe('ENABLE');
    expect(after.registrationConfig).toEqual({
      templateBody,
      roleArn: 'arn:aws:iam::123456789012:role/JITP',
    });

    const listed = await t.iot.send(new ListCACertificatesCommand({}));
    expect(listed.certificates).toEqual([expect.objectContaining({ certificateId: caId, status: 'ACTIVE' })]);

    const bad = await rejection(
      t.iot.send(new UpdateCACertificateCommand({ certificateId: caId, newStatus: 'ASLEEP' as 'ACTIVE' })),
    );
    expect(bad).toMatchObject({ name: 'InvalidRequestException', status: 400 });
    expect(t.emulator.registry.ca(caId).status).toBe('ACTIVE');
  });

  it('RegisterCertificate, UpdateCertificate and ListCertificates', async () => {
    const device = await issueLeaf(ca, { CN: 'device-1' });
    const out = await t.iot.send(
      new RegisterCertificateCommand({ certificatePem: device.certPem, setAsActive: false }),
    );
    expect(out.certificateId).toMatch(/^[0-9a-f]{64}$/);
    let listed = await t.iot.send(new ListCertificatesCommand({}));
    expect(listed.certificates).toEqual([
      expect.objectContaining({ certificateId: out.certificateId, status: 'INACTIVE' }),
    ]);

    await t.iot.send(
      new UpdateCertificateCommand({ certificateId: out.certificateId as string, newStatus: 'ACTIVE' }),
    );
    listed = await t.iot.send(new ListCertificatesCommand({}));
    expect(listed.certificates?.[0]?.status).toBe('ACTIVE');

    const stranger = await issueLeaf(await makeCa('unregistered CA'), { CN: 'device-2' });
    const refused = await rejection(
      t.iot.send(new RegisterCertificateCommand({ certificatePem: stranger.certPem })),
    );
    expect(refused).toMatchObject({ name: 'CertificateValidationException', status: 400 });
    expect((await t.iot.send(new ListCertificatesCommand({}))).certificates).toHaveLength(1);
  });

  it('answers ResourceNotFoundException for unknown certificate ids and things', async () => {
    const unknown = 'f'.repeat(64);
    const update = await rejection(
      t.iot.send(new UpdateCertificateCommand({ certificateId: unknown, newStatus: 'ACTIVE' })),
    );
    expect(update).toMatchObject({ name: 'ResourceNotFoundException', status: 404 });
    expect(t.emulator.registry.certificates.has(unknown)).toBe(false);
    const describeCa = await rejection(
      t.iot.send(new DescribeCACertificateCommand({ certificateId: unknown })),
    );
    expect(describeCa).toMatchObject({ name: 'ResourceNotFoundException', status: 404 });
    const thing = await rejection(t.iot.send(new DescribeThingCommand({ thingName: 'nobody' })));
    expect(thing).toMatchObject({ name: 'ResourceNotFoundException', status: 404 });
    expect((await t.iot.send(new ListThingsCommand({}))).things).toEqual([]);
  });

  it('DescribeEndpoint gives the MQTT listener', async () => {
    const out = await t.iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
    expect(out.endpointAddress).toBe(t.emulator.mqttEndpoint);
  });

  it('refuses unsigned requests, unknown keys and bad signatures with 403', async () => {
    const unsigned = await fetch(`${t.emulator.controlUrl}/registrationcode`);
    expect(unsigned.status).toBe(403);
    expect(unsigned.headers.get('x-amzn-errortype')).toBe('MissingAuthenticationTokenException:');
    expect(((await unsigned.json()) as { message: string }).message).toMatch(/Signature Version 4/);

    const client = (credentials: { accessKeyId: string; secretAccessKey: string }) =>
      new IoTClient({ endpoint: t.emulator.controlUrl, region: 'us-east-1', credentials, maxAttempts: 1 });
    const wrongSecret = client({ ...DEFAULT_CREDENTIALS, secretAccessKey: 'not-the-secret' });
    const bad = await rejection(
      wrongSecret.send(new UpdateCACertificateCommand({ certificateId: caId, newStatus: 'INACTIVE' })),
    );
    expect(bad).toMatchObject({ name: 'InvalidSignatureException', status: 403 });
    expect(t.emulator.registry.ca(caId).status).toBe('ACTIVE');
    const wrongKey = client({
      accessKeyId: 'AKIAOTHER',
      secretAccessKey: DEFAULT_CREDENTIALS.secretAccessKey,
    });
    expect(await rejection(wrongKey.send(new GetRegistrationCodeCommand({})))).toMatchObject({
      name: 'UnrecognizedClientException',
      status: 403,
    });
    wrongSecret.destroy();
    wrongKey.destroy();
  });

  it('answers a body over 64 KiB with 400 InvalidRequestException and closes the connection', async () => {
    const answer = await new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
      (resolve, reject) => {
        const req = request(`${t.emulator.controlUrl}/cacertificate`, { method: 'POST' }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        });
        req.on('error', reject);
        req.end(Buffer.alloc(MAX_BODY_BYTES + 1, 0x20));
      },
    );
    expect(answer).toEqual({
      status: 400,
      headers: expect.objectContaining({
        connection: 'close',
        'x-amzn-errortype': 'InvalidRequestException:',
      }),
      body: JSON.stringify({ message: `request body is over ${MAX_BODY_BYTES} bytes` }),
    });
  });

  it('answers a signed request whose path holds a malformed percent-escape with 400, naming the path', async () => {
    const client = new IoTClient({
      endpoint: t.emulator.controlUrl,
      region: 'us-east-1',
      credentials: DEFAULT_CREDENTIALS,
      maxAttempts: 1,
    });
    // before signing, so the request is signed as sent
    client.middlewareStack.add(
      (next) => (args) => {
        (args.request as { path: string }).path = '/things/%E0%A4%A';
        return next(args);
      },
      { step: 'build' },
    );
    const refused = await rejection(client.send(new DescribeThingCommand({ thingName: 'x' })));
    client.destroy();
    expect(refused).toEqual({
      name: 'InvalidRequestException',
      message:
        '/things/%E0%A4%A is not a valid path: %E0%A4%A holds a malformed percent-escape (UTF-8 as %XX bytes)',
      status: 400,
    });
  });
});
