import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetRegistrationCodeCommand, IoTClient } from '@aws-sdk/client-iot';
import { afterAll, describe, expect, it } from 'vitest';
import { startAwsIotProcess } from '../../../test/support/aws-iot-process.ts';
import { BINS, PROCESS_TEST_TIMEOUT_MS, runBin, runCommand } from '../../../test/support/processes.ts';

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

  it('refuses an --mqtt-host that is not a host', () => {
    const res = runBin('sim', ['aws-iot', '--state-dir', dir, '--mqtt-host', 'devbox:8883']);
    expect(res.status).toBe(1);
    expect(res.stderr).toBe(
      'ERROR: --mqtt-host devbox:8883 is not a host name or IP address (e.g. devbox.local or 192.0.2.10)\n',
    );
  });

  it('exits 1 with an ERROR line when the MQTT port is in use, instead of hanging', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const { port } = busy.address() as AddressInfo;
    try {
      const res = await runCommand(
        process.execPath,
        [BINS.sim, 'aws-iot', '--state-dir', dir, '--mqtt-listen', `127.0.0.1:${port}`],
        { env: { ...process.env, KEYFERRY_DEBUG: '' } },
      );
      expect(res).toMatchObject({
        signal: null,
        status: 1,
        stdout: '',
        stderr: `ERROR: listen EADDRINUSE: address already in use 127.0.0.1:${port}\n`,
      });
    } finally {
      busy.close();
    }
  });

  it('stops on SIGTERM while a client is still in its TLS handshake', async () => {
    const sim = await startAwsIotProcess(dir);
    const [host, port] = sim.endpoints.mqttEndpoint.split(':') as [string, string];
    const raw = connect(Number(port), host);
    raw.on('error', () => {});
    await once(raw, 'connect');
    const closed = once(raw, 'close');
    expect(await sim.stop()).toBe(0);
    await closed;
  });
});
