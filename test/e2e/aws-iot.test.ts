import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DescribeThingCommand,
  GetRegistrationCodeCommand,
  IoTClient,
  ListCertificatesCommand,
  RegisterCACertificateCommand,
  RegisterCertificateCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import {
  fromPem,
  issueCertificate,
  issuerFromCertificate,
  parseCertificate,
  selfSignedCa,
  softSigner,
  toPem,
  validityFor,
} from '@keyferry/core';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../packages/agent/src/agent-error.ts';
import { runAgent, runAgentAsync } from '../../packages/agent/test/support/agent-bin.ts';
import { DEFAULT_CREDENTIALS } from '../../packages/sim/src/aws-iot/sigv4.ts';
import { type AwsIotProcess, startAwsIotProcess } from '../support/aws-iot-process.ts';
import { writeAgentEnvFile } from '../support/device-link.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBin,
  startKeyferryd,
} from '../support/processes.ts';
import { createSofthsmEnv, type SofthsmEnv } from '../support/softhsm.ts';

const PRODUCT = '935389312472';
const ROLE = 'arn:aws:iam::123456789012:role/JITPRole';
// The template of the EdgeLock 2GO guide: a Thing named after the CN, certificate ACTIVE, a policy.
const TEMPLATE = {
  Parameters: {
    'AWS::IoT::Certificate::Id': { Type: 'String' },
    'AWS::IoT::Certificate::CommonName': { Type: 'String' },
    'AWS::IoT::Certificate::SerialNumber': { Type: 'String' },
  },
  Resources: {
    thing: {
      Type: 'AWS::IoT::Thing',
      Properties: {
        ThingName: { Ref: 'AWS::IoT::Certificate::CommonName' },
        AttributePayload: { SerialNumber: { Ref: 'AWS::IoT::Certificate::SerialNumber' } },
      },
    },
    certificate: {
      Type: 'AWS::IoT::Certificate',
      Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'ACTIVE' },
    },
    policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'se050-demo' } },
  },
};

/** One AWS "account": an emulator process, an SDK client for it, the env the CLI reads. */
interface Account {
  proc: AwsIotProcess;
  iot: IoTClient;
  env: NodeJS.ProcessEnv;
}

async function startAccount(stateDir: string): Promise<Account> {
  const proc = await startAwsIotProcess(stateDir);
  const credentials = {
    accessKeyId: proc.endpoints.accessKeyId,
    secretAccessKey: DEFAULT_CREDENTIALS.secretAccessKey,
  };
  return {
    proc,
    iot: new IoTClient({
      endpoint: proc.endpoints.controlUrl,
      region: proc.endpoints.region,
      credentials,
      maxAttempts: 1,
    }),
    env: {
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      AWS_REGION: proc.endpoints.region,
      AWS_ENDPOINT_URL_IOT: proc.endpoints.controlUrl,
    },
  };
}

/** A watcher on se050/demo: its own CA and certificate, registered ACTIVE by hand. */
async function subscribe(account: Account, received: string[]): Promise<mqtt.MqttClient> {
  const signer = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
  const ca = await selfSignedCa({ subject: { CN: 'watcher CA' }, signer, years: 1 });
  const leaf = async (cn: string) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const der = await issueCertificate({
      issuer: issuerFromCertificate(ca),
      subject: { CN: cn },
      subjectPublicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
      ...validityFor(new Date(), { days: 1 }),
      extensions: {
        basicConstraints: { ca: false },
        keyUsage: ['digitalSignature'],
        extKeyUsage: ['clientAuth'],
      },
      signer,
    });
    return {
      cert: toPem(der, 'CERTIFICATE'),
      key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    };
  };
  const { registrationCode } = await account.iot.send(new GetRegistrationCodeCommand({}));
  await account.iot.send(
    new RegisterCACertificateCommand({
      caCertificate: toPem(ca, 'CERTIFICATE'),
      verificationCertificate: (await leaf(registrationCode!)).cert,
      setAsActive: true,
    }),
  );
  const watcher = await leaf('watcher');
  await account.iot.send(
    new RegisterCertificateCommand({
      certificatePem: watcher.cert,
      caCertificatePem: toPem(ca, 'CERTIFICATE'),
      status: 'ACTIVE',
    }),
  );
  const client = await mqtt.connectAsync(`mqtts://${account.proc.endpoints.mqttEndpoint}`, {
    ca: readFileSync(account.proc.endpoints.serverCaFile),
    ...watcher,
    clientId: 'watcher',
    reconnectPeriod: 0,
    protocolVersion: 4,
  });
  await client.subscribeAsync('se050/demo', { qos: 1 });
  client.on('message', (_topic, payload) => received.push(payload.toString()));
  return client;
}

describe('AWS IoT end to end: keyferryd, CLI, SoftHSM2 device, agent, AWS IoT emulator', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let dataDir: string;
  let daemon: DaemonProcess;
  let softhsm: SofthsmEnv;
  let uid: string;
  let envFile: string;
  let jitp: Account;
  let manual: Account;
  let watcher: mqtt.MqttClient;
  const received: string[] = [];
  let cli: (args: string[], env?: NodeJS.ProcessEnv) => RunResult;

  const ok = (res: RunResult, what: string) => {
    expect(res.stderr, what).toBe('');
    expect(res.status, what).toBe(0);
    return res.stdout;
  };
  const agent = (args: string[]) =>
    runAgent([...args, '--env-file', envFile], { SOFTHSM2_CONF: softhsm.conf });
  const awsDemo = (account: Account) =>
    runAgentAsync(
      [
        'aws-demo',
        '--endpoint',
        account.proc.endpoints.mqttEndpoint,
        '--ca',
        account.proc.endpoints.serverCaFile,
        '--env-file',
        envFile,
      ],
      { SOFTHSM2_CONF: softhsm.conf, AWS_RETRY_DELAY: '1' },
    );

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-aws-'));
    dataDir = join(work, 'data');
    daemon = await startKeyferryd(dataDir);
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    cli = (args, env = {}) =>
      runBin('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...args], {
        env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg'), ...env },
      });
    const pki = join(work, 'pki');
    ok(cli(['keys', 'ca', 'create', pki]), 'keys ca create');
    ok(cli(['el2g', 'config-device-gateway', '--pki-dir', pki]), 'config-device-gateway');
    writeFileSync(join(work, 'root.crt'), ok(cli(['keys', 'ca', 'show', '--just-root']), 'show root'));
    const subdomain = /^# Subdomain: (\S+)$/m.exec(ok(cli(['el2g', 'status']), 'status'))?.[1] ?? '';
    const repoId = /^demo {2}(\S+)$/m.exec(ok(cli(['factories']), 'factories'))?.[1] ?? '';

    // A provisioned device: SE05x simulated on SoftHSM2, allow-listed, auto-register done.
    softhsm = createSofthsmEnv({ setProcessEnv: false });
    uid = ok(
      runBin('sim', ['se05x', 'create', '--product', PRODUCT, '--pkcs11'], {
        env: { SOFTHSM2_CONF: softhsm.conf, KEYFERRY_DATA_DIR: dataDir },
      }),
      'se05x create',
    ).trim();
    const sotaDir = join(work, 'sota');
    mkdirSync(sotaDir);
    envFile = join(work, 'lmp-el2go-auto-register');
    writeAgentEnvFile(envFile, {
      repoId,
      subdomain,
      deviceLinkAddress: daemon.listen.deviceLink!,
      dataDir,
      pkcs11Module: softhsm.module,
      sotaDir,
      rootCrt: join(work, 'root.crt'),
    });
    ok(cli(['el2g', 'devices', 'add', PRODUCT, uid]), 'devices add');
    ok(agent(['auto-register']), 'first auto-register');

    [jitp, manual] = await Promise.all([
      startAccount(join(work, 'aws-jitp')),
      startAccount(join(work, 'aws-manual')),
    ]);
    watcher = await subscribe(jitp, received);
  }, 180_000);

  afterAll(async () => {
    watcher?.end(true);
    for (const account of [jitp, manual]) {
      account?.iot.destroy();
      await account?.proc.stop();
    }
    await daemon?.stop();
    softhsm?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('aws-demo on a device provisioned before AWS IoT was configured: no AWS pair yet', async () => {
    const res = await awsDemo(jitp);
    expect(res.stderr).toMatch(
      /^ERROR: token 'aktualizr' in \S+ has no AWS IoT key SE_83000044 \(0x83000044\): run keyferry el2g config-aws-iot/,
    );
    expect(res.status).toBe(EXIT_CODES.aws_not_provisioned);
  });

  it('config-aws-iot with the JITP flags registers aws-iot-ca with AWS, ACTIVE, and the next agent run provisions the pair', () => {
    const template = join(work, 'template.json');
    writeFileSync(template, JSON.stringify(TEMPLATE));
    const out = ok(
      cli(['el2g', 'config-aws-iot', '--jitp-template', template, '--jitp-role-arn', ROLE], jitp.env),
      'config-aws-iot',
    );
    const status = ok(cli(['el2g', 'status']), 'status');
    const caPem =
      /Name: aws-iot-ca\nAlgorithm: NIST_P256\nID: \d+\n(-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----)/.exec(
        status,
      )?.[1];
    expect(caPem, status).toBeDefined();
    // AWS's CA certificate id is the SHA-256 of its DER.
    const caId = parseCertificate(fromPem(caPem!, 'CERTIFICATE')).fingerprintSha256;
    expect(out).toMatch(
      new RegExp(
        '^Getting registration code from AWS\n \\|-> [0-9a-f]{64}\nConfiguring keyferry\n' +
          ` \\|-> AWS Certificate ID ${caId}\n \\|-> ACTIVE\n` +
          'Registered the CA with AWS IoT, auto-registration enabled\nJITP template set, run as .*\n$',
      ),
    );
    const run = ok(agent(['auto-register']), 'auto-register after config-aws-iot');
    expect(run).toContain('aws-iot-ca-kp: generated key SE_83000044 in the secure element\n');
    expect(run).toContain('aws-iot-ca: stored certificate as SE_83000045\n');
    const show = ok(cli(['el2g', 'devices', 'show', uid]), 'devices show');
    expect(show).toMatch(/\taws-iot-ca {16}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);
    const pem = /\n# aws-iot-ca\n(-----BEGIN CERTIFICATE-----\n[\s\S]*?-----END CERTIFICATE-----\n)/.exec(
      show,
    )?.[1];
    expect(pem, show).toBeDefined();
    expect(parseCertificate(fromPem(pem!, 'CERTIFICATE')).subjectAttributes.CN).toBe(uid.slice(2));
  });

  it('aws-demo: hung up once by JITP, says so, reconnects, publishes {"time": …}; the Thing is named after the CN', async () => {
    const res = await awsDemo(jitp);
    expect(res.stderr).toBe('');
    const connecting = expect.stringMatching(
      /^Connecting to \S+ as [0-9a-f-]{36} with SE_83000045 \(CN [0-9a-f]{36}\)$/,
    );
    expect(res.stdout.trimEnd().split('\n')).toEqual([
      connecting,
      'AWS IoT registered the certificate (JITP) and closed the connection; retrying in 1 s',
      connecting,
      expect.stringMatching(/^Published \{"time": [\d.]+\} to se050\/demo \(QoS 1\)$/),
    ]);
    expect(res.status).toBe(0);
    await expect.poll(() => received.length).toBe(1);
    const message = JSON.parse(received[0]!) as { time: number };
    expect(Object.keys(message)).toEqual(['time']);
    expect(Math.abs(message.time - Date.now() / 1000)).toBeLessThan(600);
    const thing = await jitp.iot.send(new DescribeThingCommand({ thingName: uid.slice(2) }));
    expect(thing.thingName).toBe(uid.slice(2));
    expect(thing.attributes).toEqual({ SerialNumber: BigInt(uid).toString().padStart(42, '0') });
  });

  it('manual registration (no template): refused until UpdateCertificate ACTIVE, then publishes', async () => {
    const out = ok(cli(['el2g', 'config-aws-iot'], manual.env), 'config-aws-iot without JITP');
    expect(out).toMatch(/ \|-> ACTIVE\nRegistered the CA with AWS IoT, auto-registration enabled\n$/);
    const refused = await awsDemo(manual);
    expect(refused.stderr).toMatch(
      /^ERROR: AWS IoT at \S+ closed the connection again before accepting it: the certificate is not active/,
    );
    expect(refused.status).toBe(EXIT_CODES.refused);
    const pending = (await manual.iot.send(new ListCertificatesCommand({}))).certificates ?? [];
    expect(pending.map((c) => c.status)).toEqual(['PENDING_ACTIVATION']);
    await expect(manual.iot.send(new DescribeThingCommand({ thingName: uid.slice(2) }))).rejects.toThrow();

    await manual.iot.send(
      new UpdateCertificateCommand({ certificateId: pending[0]!.certificateId!, newStatus: 'ACTIVE' }),
    );
    const res = await awsDemo(manual);
    expect(res.stderr).toBe('');
    expect(res.stdout).not.toContain('JITP');
    expect(res.stdout).toMatch(/\nPublished \{"time": [\d.]+\} to se050\/demo \(QoS 1\)\n$/);
    expect(res.status).toBe(0);
  });
});
