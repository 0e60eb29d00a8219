import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetRegistrationCodeCommand, IoTClient } from '@aws-sdk/client-iot';
import { afterAll, describe, expect, it } from 'vitest';
import { startAwsIotProcess } from '../../../test/support/aws-iot-process.ts';
import { PROCESS_TEST_TIMEOUT_MS, runBin } from '../../../test/support/processes.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const dir = mkdtempSync(join(tmpdir(), 'keyferry-aws-iot-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('keyferry-sim aws-iot', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('prints and writes its endpoints, takes its own credentials, and stops on SIGTERM', async () => {
    const credentials = { accessKeyId: 'AKIACLITEST', secretAccessKey: 'cli-test-secret' };
    const sim = await startAwsIotProcess(dir, [
      '--access-key-id',
      credentials.accessKeyId,
      '--secret-access-key',
      credentials.secretAccessKey,
    ]);
    try {
      const { endpoints } = sim;
      expect(sim.stdout()).toBe(
        `control plane: ${endpoints.controlUrl}\nMQTT endpoint: ${endpoints.mqttEndpoint}\n` +
          `server CA:     ${join(dir, 'server-ca.pem')}\nendpoints:     ${join(dir, 'endpoints.json')}\n`,
      );
      expect(endpoints).toMatchObject({
        region: 'us-east-1',
        accessKeyId: 'AKIACLITEST',
        serverCaFile: join(dir, 'server-ca.pem'),
      });
      expect(readFileSync(endpoints.serverCaFile, 'utf8')).toMatch(/^-----BEGIN CERTIFICATE-----/);
      const iot = new IoTClient({
        endpoint: endpoints.controlUrl,
        region: 'us-east-1',
        credentials,
        maxAttempts: 1,
      });
      expect((await iot.send(new GetRegistrationCodeCommand({}))).registrationCode).toMatch(/^[0-9a-f]{64}$/);
      iot.destroy();
      expect((await fetch(`${endpoints.controlUrl}/registrationcode`)).status).toBe(403);
    } finally {
      expect(await sim.stop()).toBe(0);
    }
  });

  it('refuses a listen address that is not host:port', () => {
    const res = runBin('sim', ['aws-iot', '--state-dir', dir, '--listen', 'localhost']);
    expect(res.status).toBe(1);
    expect(res.stderr).toBe('ERROR: --listen localhost is not host:port (e.g. 127.0.0.1:0)\n');
  });
});
