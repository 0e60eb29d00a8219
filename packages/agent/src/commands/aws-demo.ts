import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { AgentError } from '../agent-error.ts';
import {
  AWS_DEMO_TOPIC,
  AWS_MQTT_PORT,
  DEFAULT_CONNECT_TIMEOUT_SECONDS,
  DEFAULT_RETRY_DELAY_SECONDS,
} from '../aws-demo-defaults.ts';
import { consoleLog } from '../log.ts';
import { seSettings, settingSource } from '../settings/settings.ts';

function readCa(file: string): string {
  try {
    const text = readFileSync(file, 'utf8');
    if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return text;
  } catch (error) {
    throw new AgentError('file_unreadable', `AWS IoT CA file ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

interface CommandOptions {
  endpoint?: string;
  ca?: string;
  retryDelay?: string;
  connectTimeout?: string;
  envFile?: string;
}

/** Registers `keyferry-agent aws-demo --endpoint HOST[:PORT]`. */
export function registerAwsDemo(program: Command): void {
  program
    .command('aws-demo')
    .description(
      `publish {"time": <epoch seconds>} to ${AWS_DEMO_TOPIC} on AWS IoT with the secure element's AWS key pair`,
    )
    .option(
      '--endpoint <host[:port]>',
      `AWS IoT data endpoint (or AWS_ENDPOINT); port ${AWS_MQTT_PORT} by default`,
    )
    .option(
      '--ca <file>',
      "CA certificate(s) that verify the endpoint (or AWS_ROOT_CA); default: Node's trust store",
    )
    .option(
      '--retry-delay <seconds>',
      `wait after the JITP hang-up (or AWS_RETRY_DELAY); default ${DEFAULT_RETRY_DELAY_SECONDS}`,
    )
    .option(
      '--connect-timeout <seconds>',
      `wait this long for AWS IoT to accept a connection (or AWS_CONNECT_TIMEOUT); default ${DEFAULT_CONNECT_TIMEOUT_SECONDS}`,
    )
    .option('--env-file <file>', 'settings file (default /etc/default/lmp-el2go-auto-register)')
    .action(async (opts: CommandOptions) => {
      const endpointText = opts.endpoint ?? process.env.AWS_ENDPOINT;
      if (endpointText === undefined || endpointText === '') {
        throw new AgentError(
          'setting_invalid',
          'aws-demo needs --endpoint HOST[:PORT] (or AWS_ENDPOINT): aws iot describe-endpoint --endpoint-type iot:Data-ATS prints it',
        );
      }
      const retryText = opts.retryDelay ?? process.env.AWS_RETRY_DELAY ?? String(DEFAULT_RETRY_DELAY_SECONDS);
      const retryDelaySeconds = Number(retryText);
      if (!(retryDelaySeconds >= 0 && retryDelaySeconds <= 3600)) {
        throw new AgentError(
          'setting_invalid',
          `--retry-delay is ${JSON.stringify(retryText)}; give seconds, 0 to 3600`,
        );
      }
      const timeoutText =
        opts.connectTimeout ?? process.env.AWS_CONNECT_TIMEOUT ?? String(DEFAULT_CONNECT_TIMEOUT_SECONDS);
      const connectTimeoutSeconds = Number(timeoutText);
      if (!(connectTimeoutSeconds >= 1 && connectTimeoutSeconds <= 600)) {
        throw new AgentError(
          'setting_invalid',
          `--connect-timeout is ${JSON.stringify(timeoutText)}; give seconds, 1 to 600`,
        );
      }
      const caFile = opts.ca ?? process.env.AWS_ROOT_CA;
      // loaded when the command runs: mqtt, PKCS#11 and X.509 would slow every --help
      const { parseEndpoint, runAwsDemo } = await import('../aws-demo.ts');
      const { openSecureElement } = await import('../se/open.ts');
      const settings = seSettings(settingSource(opts.envFile, process.env, false));
      const se = openSecureElement(settings);
      try {
        await runAwsDemo(
          se,
          settings,
          {
            ...parseEndpoint(endpointText),
            ca: caFile ? readCa(caFile) : undefined,
            retryDelaySeconds,
            connectTimeoutSeconds,
          },
          consoleLog,
        );
      } finally {
        se.close();
      }
    });
}
