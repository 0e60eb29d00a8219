import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSecureContext, type SecureContext, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { parseCertificate, toPem } from '@keyferry/core';
import { findOpensslPkcs11Engine, opensslEngineKeyUri } from '@keyferry/pkcs11';
import { MqttClient } from 'mqtt';
import { AgentError } from './agent-error.ts';
import { AWS_DEMO_TOPIC, AWS_MQTT_PORT } from './aws-demo-defaults.ts';
import type { Log } from './log.ts';
import { hexId, type SecureElement, seLabel, type TlsKeyOptions } from './se/port.ts';
import { SoftSecureElement } from './se/soft-se.ts';
import type { SeSettings } from './settings/settings.ts';

/** The AWS IoT pair EdgeLock 2GO provisions (objects 83000044/83000045, docs/api.md). */
export const AWS_KEY_ID = 0x83000044;
export const AWS_CERT_ID = 0x83000045;
/** What the awsiot-optee container did: keep-alive 30 s (and 5 s before the one retry, aws-demo-defaults.ts). */
export const KEEPALIVE_SECONDS = 30;

export interface AwsDemoOptions {
  host: string;
  port: number;
  /** PEM of the CA that signs the endpoint's certificate; undefined = Node's store (Amazon Root CA 1). */
  ca: string | undefined;
  retryDelaySeconds: number;
  /** How long one connection may take to be accepted (TLS handshake and CONNACK). */
  connectTimeoutSeconds: number;
}

/** How one connection attempt ended. */
type Attempt = { kind: 'connected'; client: MqttClient } | { kind: 'hung-up' };

/**
 * `keyferry-agent aws-demo`: what the awsiot-optee container did. mTLS to AWS IoT with the key
 * at 0x83000044 and certificate at 0x83000045 (the key stays in the secure element), one
 * QoS 1 publish of `{"time": <epoch seconds>}` to se050/demo. AWS closes the very first
 * connection of a just-in-time provisioned certificate before CONNACK; the demo says so, waits
 * and tries once more. A second hang-up means the certificate is not (yet) active.
 */
export async function runAwsDemo(
  se: SecureElement,
  seConfig: SeSettings,
  options: AwsDemoOptions,
  log: Log,
): Promise<void> {
  const { certificatePem, commonName, key } = awsCredentials(se, seConfig);
  const endpoint = `${options.host}:${options.port}`;
  const secureContext = clientContext(options, certificatePem, key);
  for (let attempt = 1; ; attempt++) {
    const clientId = randomUUID();
    log.info(`Connecting to ${endpoint} as ${clientId} with ${seLabel(AWS_CERT_ID)} (CN ${commonName})`);
    const result = await connectOnce(options, secureContext, clientId);
    if (result.kind === 'connected') {
      try {
        await publish(result.client, log);
      } finally {
        await result.client.endAsync().catch(() => {});
      }
      return;
    }
    if (attempt === 2) {
      throw new AgentError(
        'refused',
        `AWS IoT at ${endpoint} closed the connection again before accepting it: the certificate is not active ` +
          '(PENDING_ACTIVATION until a JITP template or aws iot update-certificate --new-status ACTIVE activates it) ' +
          'or its CA is not registered and ACTIVE (keyferry el2g config-aws-iot)',
      );
    }
    log.info(
      `AWS IoT registered the certificate (JITP) and closed the connection; retrying in ${options.retryDelaySeconds} s`,
    );
    await sleep(options.retryDelaySeconds * 1000);
  }
}

async function publish(client: MqttClient, log: Log): Promise<void> {
  const payload = `{"time": ${Date.now() / 1000}}`;
  try {
    await client.publishAsync(AWS_DEMO_TOPIC, payload, { qos: 1 });
  } catch (error) {
    throw new AgentError(
      'transient',
      `AWS IoT accepted the connection but not the publish to ${AWS_DEMO_TOPIC}: ${(error as Error).message}; ` +
        "check the certificate's policy allows iot:Publish",
      { cause: error },
    );
  }
  log.info(`Published ${payload} to ${AWS_DEMO_TOPIC} (QoS 1)`);
}

/** The AWS certificate from the SE and the TLS options for its key (engine on pkcs11, PEM on soft). */
function awsCredentials(se: SecureElement, seConfig: SeSettings) {
  const missing = (what: string) =>
    new AgentError(
      'aws_not_provisioned',
      `${se.description} has no AWS IoT ${what}: run keyferry el2g config-aws-iot on the host, then keyferry-agent auto-register on the device`,
    );
  if (se.publicKey(AWS_KEY_ID) === undefined)
    throw missing(`key ${seLabel(AWS_KEY_ID)} (${hexId(AWS_KEY_ID)})`);
  const der = se.getCertificate(AWS_CERT_ID);
  if (der === undefined) throw missing(`certificate ${seLabel(AWS_CERT_ID)} (${hexId(AWS_CERT_ID)})`);
  const commonName = parseCertificate(der).subjectAttributes.CN ?? '(no CN)';
  return { certificatePem: toPem(der, 'CERTIFICATE'), commonName, key: tlsKey(se, seConfig) };
}

function tlsKey(se: SecureElement, seConfig: SeSettings): TlsKeyOptions {
  if (se instanceof SoftSecureElement) return { key: readFileSync(se.keyPath(AWS_KEY_ID), 'utf8') };
  // As for the identity key (se/pkcs11-se.ts): libp11 finds the module in PKCS11_MODULE_PATH,
  // OpenSSL finds the engine by id in OPENSSL_ENGINES.
  process.env.PKCS11_MODULE_PATH = seConfig.pkcs11Module;
  let engine: string;
  try {
    engine = findOpensslPkcs11Engine();
  } catch (error) {
    throw new AgentError('se_error', (error as Error).message, { cause: error });
  }
  process.env.OPENSSL_ENGINES = dirname(engine);
  return {
    privateKeyEngine: 'pkcs11',
    privateKeyIdentifier: opensslEngineKeyUri({
      tokenLabel: seConfig.pkcs11TokenLabel,
      objectLabel: seLabel(AWS_KEY_ID),
      pin: seConfig.pkcs11Pin,
    }),
  };
}

/** Node's codes for a server certificate that does not verify (not TLS alerts about ours). */
const UNTRUSTED = /^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED|CERT_|ERR_TLS_CERT_ALTNAME)/;

/** The TLS client context, made once: a key the engine cannot load fails here, named. */
function clientContext(options: AwsDemoOptions, cert: string, key: TlsKeyOptions): SecureContext {
  try {
    return createSecureContext({
      cert,
      ...key,
      ...(options.ca === undefined ? {} : { ca: options.ca }),
      minVersion: 'TLSv1.2',
    });
  } catch (error) {
    throw new AgentError(
      'se_error',
      `cannot use the AWS IoT key ${seLabel(AWS_KEY_ID)} and certificate ${seLabel(AWS_CERT_ID)} for TLS: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/** One MQTT connection: resolves connected or hung-up; throws for failures that a retry will not fix. */
function connectOnce(
  options: AwsDemoOptions,
  secureContext: SecureContext,
  clientId: string,
): Promise<Attempt> {
  const endpoint = `${options.host}:${options.port}`;
  let secured = false;
  return new Promise<Attempt>((resolve, reject) => {
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
    };
    const client = new MqttClient(
      () => {
        const socket: TLSSocket = tlsConnect({
          host: options.host,
          port: options.port,
          ...(isIP(options.host) === 0 ? { servername: options.host } : {}),
          secureContext,
        });
        socket.once('secureConnect', () => {
          secured = true;
        });
        return socket;
      },
      {
        clientId,
        keepalive: KEEPALIVE_SECONDS,
        clean: true,
        protocolVersion: 4,
        reconnectPeriod: 0,
        connectTimeout: options.connectTimeoutSeconds * 1000,
      },
    );
    client.once('connect', () => finish(() => resolve({ kind: 'connected', client })));
    client.on('error', (error: Error & { code?: string | number }) => {
      const code = typeof error.code === 'string' ? error.code : '';
      if (!secured && UNTRUSTED.test(code)) {
        finish(() =>
          reject(
            new AgentError(
              'server_untrusted',
              `the certificate of AWS IoT endpoint ${endpoint} does not verify (${code}): name the CA that signs it with --ca FILE or AWS_ROOT_CA (Amazon Root CA 1 for AWS)`,
              { cause: error },
            ),
          ),
        );
      } else if (typeof error.code === 'number') {
        // A CONNACK with a return code: AWS answered and said no.
        finish(() =>
          reject(
            new AgentError('refused', `AWS IoT at ${endpoint} refused the connection: ${error.message}`),
          ),
        );
      } else if (
        !secured &&
        /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(code)
      ) {
        finish(() =>
          reject(
            new AgentError(
              'transient',
              `cannot reach AWS IoT endpoint ${endpoint} (${code}); check --endpoint and the network`,
            ),
          ),
        );
      } else if (error.message === 'connack timeout') {
        // Nothing came back in time: not a hang-up, which JITP does, but a silent endpoint.
        const waited = `within ${options.connectTimeoutSeconds} s`;
        finish(() =>
          reject(
            new AgentError(
              'transient',
              secured
                ? `AWS IoT at ${endpoint} completed TLS but sent no CONNACK ${waited}; retry later, or give it longer with --connect-timeout`
                : `AWS IoT endpoint ${endpoint} did not complete a TLS handshake ${waited}; check --endpoint and the network (is port ${options.port} let through?)`,
            ),
          ),
        );
      }
      // Anything else (a reset as the server hangs up) ends in 'close' below.
    });
    client.once('close', () => {
      client.end(true);
      finish(() => resolve({ kind: 'hung-up' }));
    });
  });
}

/** Parses `HOST[:PORT]` (IPv6 in brackets); the port defaults to AWS's 8883. */
export function parseEndpoint(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s/]+))(?::(\d{1,5}))?$/.exec(text.trim());
  const port = m?.[3] === undefined ? AWS_MQTT_PORT : Number(m[3]);
  const host = m?.[1] ?? m?.[2];
  if (host === undefined || !(port > 0 && port < 65536)) {
    throw new AgentError(
      'setting_invalid',
      `endpoint ${JSON.stringify(text)} is not HOST[:PORT]; use the name aws iot describe-endpoint --endpoint-type iot:Data-ATS prints`,
    );
  }
  return { host, port };
}
