import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Command } from 'commander';
import { simDir } from '../se05x/vendor-ca.ts';
import { ENDPOINTS_FILE, type ListenAddress, startAwsIotEmulator } from './emulator.ts';
import { DEFAULT_CREDENTIALS } from './sigv4.ts';

interface AwsIotOptions {
  listen: string;
  mqttListen: string;
  mqttHost?: string;
  stateDir?: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

/** Registers `keyferry-sim aws-iot`: runs the AWS IoT Core emulator until SIGTERM/SIGINT. */
export function registerAwsIotCommand(program: Command): void {
  program
    .command('aws-iot')
    .description(
      'run a local AWS IoT Core emulator: the control-plane REST API (SigV4-signed; CA and ' +
        'certificate registration, things, endpoint) and MQTT over TLS with client certificates and ' +
        'just-in-time provisioning; see packages/sim/README.md for what it does not do',
    )
    .option('--listen <host:port>', 'control plane (HTTP) address', '127.0.0.1:0')
    .option('--mqtt-listen <host:port>', 'MQTT over TLS address', '127.0.0.1:0')
    .option(
      '--mqtt-host <host>',
      'the host devices are told to connect to (MQTT endpoint, DescribeEndpoint; in the server ' +
        'certificate); default the --mqtt-listen host, or this machine’s host name when that is 0.0.0.0 or ::',
    )
    .option('--state-dir <dir>', 'where server-ca.pem and endpoints.json go; default <data dir>/sim/aws-iot')
    .option(
      '--access-key-id <id>',
      'the access key id requests must be signed with',
      DEFAULT_CREDENTIALS.accessKeyId,
    )
    .option('--secret-access-key <secret>', 'its secret', DEFAULT_CREDENTIALS.secretAccessKey)
    .option('--region <region>', 'the region in ARNs', 'us-east-1')
    .addHelpText(
      'after',
      '\nPrints the control-plane URL, the MQTT endpoint and the server CA file, and writes them to\n' +
        `<state dir>/${ENDPOINTS_FILE}. State (CAs, certificates, things) is in memory only.`,
    )
    .action(async (opts: AwsIotOptions) => {
      const stateDir = opts.stateDir ?? join(simDir(), 'aws-iot');
      const emulator = await startAwsIotEmulator({
        listen: parseListen(opts.listen, '--listen'),
        mqttListen: parseListen(opts.mqttListen, '--mqtt-listen'),
        ...(opts.mqttHost === undefined ? {} : { mqttHost: parseHost(opts.mqttHost, '--mqtt-host') }),
        stateDir,
        credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
        region: opts.region,
        onConnection: (outcome) => {
          const id =
            'certificateId' in outcome && outcome.certificateId !== undefined
              ? ` ${outcome.certificateId.slice(0, 12)}…`
              : '';
          const detail =
            outcome.kind === 'refused' || outcome.kind === 'dropped'
              ? `: ${outcome.reason}`
              : outcome.kind === 'jitp'
                ? `: registered PENDING_ACTIVATION, ${outcome.provisioned}; connection dropped`
                : '';
          process.stderr.write(`mqtt ${outcome.kind}${id}${detail}\n`);
        },
      });
      process.stdout.write(
        `control plane: ${emulator.controlUrl}\n` +
          `MQTT endpoint: ${emulator.mqttEndpoint}\n` +
          `server CA:     ${emulator.serverCaFile}\n` +
          `endpoints:     ${join(stateDir, ENDPOINTS_FILE)}\n`,
      );
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      await emulator.close();
    });
}

function parseHost(value: string, flag: string): string {
  if (/^[A-Za-z0-9.-]+$/.test(value) || isIP(value) === 6) return value;
  throw new Error(`${flag} ${value} is not a host name or IP address (e.g. devbox.local or 192.0.2.10)`);
}

function parseListen(value: string, flag: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (m === null || port > 65535) throw new Error(`${flag} ${value} is not host:port (e.g. 127.0.0.1:0)`);
  return { host: (m[1] ?? m[2]) as string, port };
}
