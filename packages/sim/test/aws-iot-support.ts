// Helpers for the AWS IoT emulator tests: an emulator in a temp dir, a real IoTClient
// pointed at it, and CA/device certificates made with @keyferry/core.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IoTClient } from '@aws-sdk/client-iot';
import {
  type DnSpec,
  issueCertificate,
  issuerFromCertificate,
  type Signer,
  selfSignedCa,
  softSigner,
  toPem,
  validityFor,
} from '@keyferry/core';
import mqtt from 'mqtt';
import type { ConnectionOutcome } from '../src/aws-iot/data-plane.ts';
import { type AwsIotEmulator, startAwsIotEmulator } from '../src/aws-iot/emulator.ts';
import { DEFAULT_CREDENTIALS } from '../src/aws-iot/sigv4.ts';

/** Only against a hang: a TLS + MQTT connect on a busy machine can take seconds. */
const MQTT_CONNECT_TIMEOUT_MS = 60_000;

// The pinned SDK supports Node 20; its notice about later releases is noise here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

export interface TestEmulator {
  readonly emulator: AwsIotEmulator;
  readonly iot: IoTClient;
  readonly dir: string;
  /** Every MQTT connection outcome, in order. */
  readonly outcomes: ConnectionOutcome[];
  close(): Promise<void>;
}

export async function startTestEmulator(): Promise<TestEmulator> {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-aws-iot-'));
  const outcomes: ConnectionOutcome[] = [];
  const emulator = await startAwsIotEmulator({ stateDir: dir, onConnection: (o) => outcomes.push(o) });
  const iot = new IoTClient({
    endpoint: emulator.controlUrl,
    region: 'us-east-1',
    credentials: DEFAULT_CREDENTIALS,
    maxAttempts: 1,
  });
  return {
    emulator,
    iot,
    dir,
    outcomes,
    close: async () => {
      iot.destroy();
      await emulator.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestCa {
  readonly der: Uint8Array;
  readonly pem: string;
  readonly signer: Signer;
  /** Its private key (PKCS#8 PEM), for a client that presents the CA certificate itself. */
  readonly keyPem: string;
}

export async function makeCa(cn: string): Promise<TestCa> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signer = softSigner(privateKey);
  const der = await selfSignedCa({ subject: { O: 'keyferry test', CN: cn }, signer, years: 5 });
  const keyPem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  return { der, pem: toPem(der, 'CERTIFICATE'), signer, keyPem };
}

export interface TestLeaf {
  readonly certPem: string;
  readonly keyPem: string;
  readonly der: Uint8Array;
}

/** A leaf certificate (verification or device) issued by `ca`; with `asCa`, a CA certificate (CA:TRUE) instead. */
export async function issueLeaf(
  ca: TestCa,
  subject: DnSpec,
  options: { asCa?: boolean } = {},
): Promise<TestLeaf> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = await issueCertificate({
    issuer: issuerFromCertificate(ca.der),
    subject,
    subjectPublicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
    ...validityFor(new Date(), { years: 1 }),
    extensions: options.asCa
      ? { basicConstraints: { ca: true }, keyUsage: ['keyCertSign', 'digitalSignature'] }
      : { basicConstraints: { ca: false }, keyUsage: ['digitalSignature'], extKeyUsage: ['clientAuth'] },
    signer: ca.signer,
  });
  return {
    der,
    certPem: toPem(der, 'CERTIFICATE'),
    keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
  };
}

/** The result of one MQTT connection attempt. */
export type ConnectResult =
  | { connected: true; client: mqtt.MqttClient }
  | { connected: false; error: string };

/**
 * Connects once (no reconnect) over TLS with `leaf`; resolves connected or why not. `trust`
 * replaces the emulator's server CA (a device that does not trust it).
 */
export function connectMqtt(
  emulator: AwsIotEmulator,
  leaf: TestLeaf,
  clientId: string,
  options: { trust?: string } = {},
): Promise<ConnectResult> {
  return new Promise((resolve) => {
    const client = mqtt.connect(`mqtts://${emulator.mqttEndpoint}`, {
      ca: options.trust ?? readFileSync(emulator.serverCaFile),
      cert: leaf.certPem,
      key: leaf.keyPem,
      clientId,
      reconnectPeriod: 0,
      connectTimeout: MQTT_CONNECT_TIMEOUT_MS,
      protocolVersion: 4,
    });
    let done = false;
    const finish = (result: ConnectResult) => {
      if (done) return;
      done = true;
      if (!result.connected) client.end(true);
      resolve(result);
    };
    client.once('connect', () => finish({ connected: true, client }));
    client.once('error', (error) => finish({ connected: false, error: error.message }));
    client.once('close', () => finish({ connected: false, error: 'connection closed by the server' }));
  });
}

/** The next connection outcome after the first `seen` (the emulator may log it after the client sees the close). */
export async function outcomeAfter(t: TestEmulator, seen: number): Promise<ConnectionOutcome> {
  while (t.outcomes.length <= seen) await new Promise((r) => setTimeout(r, 20));
  return t.outcomes[seen] as ConnectionOutcome;
}
