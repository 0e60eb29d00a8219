import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeCACertificateCommand, IoTClient, ListCACertificatesCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CREDENTIALS } from '../../packages/sim/src/aws-iot/sigv4.ts';
import { type AwsIotProcess, startAwsIotProcess } from '../support/aws-iot-process.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBin,
  startKeyferryd,
} from '../support/processes.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const ROLE = 'arn:aws:iam::123456789012:role/JITPRole';
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
    policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'se050-demo' } },
  },
});

let work: string;
let daemon: DaemonProcess;
let sim: AwsIotProcess;
let iot: IoTClient;
let token: string;

function cli(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
  return runBin(
    'keyferry',
    ['--server', daemon.listen.api, '-t', token, '-f', 'demo', 'el2g', 'config-aws-iot', ...args],
    {
      env: {
        HOME: work,
        XDG_CONFIG_HOME: join(work, 'xdg'),
        AWS_CONFIG_FILE: join(work, 'no-aws-config'),
        AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-aws-credentials'),
        AWS_ACCESS_KEY_ID: DEFAULT_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: DEFAULT_CREDENTIALS.secretAccessKey,
        AWS_REGION: 'us-east-1',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_ENDPOINT_URL_IOT: sim.endpoints.controlUrl,
        ...env,
      },
    },
  );
}

async function caCount(): Promise<number> {
  return (await iot.send(new ListCACertificatesCommand({}))).certificates?.length ?? -1;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'keyferry-config-aws-iot-'));
  daemon = await startKeyferryd(join(work, 'data'));
  token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
  sim = await startAwsIotProcess(join(work, 'aws-iot'));
  iot = new IoTClient({
    endpoint: sim.endpoints.controlUrl,
    region: 'us-east-1',
    credentials: DEFAULT_CREDENTIALS,
    maxAttempts: 1,
    // no kept-alive sockets: while runBin's spawnSync blocks this process, the emulator may
    // close an idle one, and the next call would reuse it before seeing the close (hang up)
    requestHandler: {
      httpAgent: new HttpAgent({ keepAlive: false }),
      httpsAgent: new HttpsAgent({ keepAlive: false }),
    },
  });
  writeFileSync(join(work, 'template.json'), TEMPLATE);
});
afterAll(async () => {
  iot?.destroy();
  await sim?.stop();
  await daemon?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('keyferry el2g config-aws-iot against keyferry-sim aws-iot', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  it('refuses bad input before touching AWS or the service', async () => {
    const half = cli(['--jitp-template', join(work, 'template.json')]);
    expect(half).toMatchObject({ status: 2, stdout: '' });
    expect(half.stderr).toBe(
      'ERROR: --jitp-template needs --jitp-role-arn ARN (the IAM role AWS IoT assumes to run it)\n',
    );
    writeFileSync(join(work, 'big.json'), JSON.stringify({ Resources: {}, x: 'y'.repeat(10_240) }));
    const big = cli(['--jitp-template', join(work, 'big.json'), '--jitp-role-arn', ROLE]);
    expect(big.stderr).toMatch(
      /^ERROR: the JITP template .*big\.json is 10\d{3} characters; AWS takes at most 10240\n$/,
    );
    const noCredentials = cli([], { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' });
    expect(noCredentials.status).toBe(1);
    expect(noCredentials.stderr).toMatch(
      /^ERROR: no AWS credentials: .*; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/,
    );
    const badSecret = cli([], { AWS_SECRET_ACCESS_KEY: 'wrong' });
    expect(badSecret.stderr).toMatch(
      /^ERROR: AWS IoT refused GetRegistrationCode: InvalidSignatureException: /,
    );
    // the SDK gives a refused connection a $metadata too: it is not an answer (was: AWS IoT refused …)
    const unreachable = cli(['--aws-endpoint', 'http://127.0.0.1:9'], { AWS_MAX_ATTEMPTS: '1' });
    expect(unreachable).toEqual({
      status: 1,
      stdout: 'Getting registration code from AWS\n',
      stderr:
        'ERROR: cannot reach AWS IoT for GetRegistrationCode: connect ECONNREFUSED 127.0.0.1:9; check --aws-endpoint / AWS_ENDPOINT_URL_IOT and the network\n',
    });
    expect(await caCount()).toBe(0);
    const cas = await fetch(`${daemon.listen.api}/ota/factories/demo/el2g/intermediate-cas/`, {
      headers: { 'osf-token': token },
    });
    expect(await cas.json()).toEqual([]);
  });

  it('registers the aws-iot-ca with JITP, and re-running changes nothing', async () => {
    const res = cli(['--jitp-template', join(work, 'template.json'), '--jitp-role-arn', ROLE]);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    const [{ certificateId } = { certificateId: '' }] =
      (await iot.send(new ListCACertificatesCommand({}))).certificates ?? [];
    const code = /^ \|-> ([0-9a-f]{64})$/m.exec(res.stdout)?.[1];
    expect(res.stdout).toBe(
      // fioctl's lines in fioctl's order, then keyferry's
      `Getting registration code from AWS\n |-> ${code}\nConfiguring keyferry\n` +
        ` |-> AWS Certificate ID ${certificateId}\n |-> ACTIVE\n` +
        'Registered the CA with AWS IoT, auto-registration enabled\n' +
        `JITP template set, run as ${ROLE}\n`,
    );
    const described = await iot.send(new DescribeCACertificateCommand({ certificateId }));
    expect(described.certificateDescription).toMatchObject({
      status: 'ACTIVE',
      autoRegistrationStatus: 'ENABLE',
    });
    expect(described.registrationConfig).toEqual({ templateBody: TEMPLATE, roleArn: ROLE });
    expect(described.certificateDescription?.certificatePem).toContain('-----BEGIN CERTIFICATE-----');

    const again = cli(['--json']);
    expect(again.stderr).toBe('');
    expect(JSON.parse(again.stdout)).toEqual({
      registrationCode: code,
      certificateId,
      status: 'ACTIVE',
      autoRegistrationStatus: 'ENABLE',
      jitp: true,
      registered: false,
    });
    expect(await caCount()).toBe(1);
  });
});
