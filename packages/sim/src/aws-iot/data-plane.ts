import type { Socket } from 'node:net';
import { createServer, type DetailedPeerCertificate, type Server, type TLSSocket } from 'node:tls';
import { parseCertificate } from '@keyferry/core';
import { Aedes, type Client } from 'aedes';
import type { IotRegistry } from './registry.ts';
import { ProvisioningError, runProvisioningTemplate } from './template.ts';

/** What happened to one TLS connection (logged, and observable in tests). */
export type ConnectionOutcome =
  | { kind: 'accepted'; certificateId: string }
  | { kind: 'refused'; reason: string; certificateId?: string }
  | { kind: 'jitp'; certificateId: string; caCertificateId: string; provisioned: string }
  | { kind: 'dropped'; certificateId: string; reason: string };

export interface DataPlane {
  readonly server: Server;
  readonly broker: Aedes;
  close(): Promise<void>;
}

/**
 * The data plane: MQTT 3.1.1 (aedes) over TLS with a client certificate required. A
 * registered ACTIVE certificate chained to an ACTIVE registered CA is handed to the broker;
 * an unknown certificate of an ACTIVE CA with auto-registration ENABLE is registered
 * PENDING_ACTIVATION (just-in-time registration), announced on
 * `$aws/events/certificates/registered/<caCertificateId>`, provisioned by the CA's template
 * when it has one, and its connection is dropped, as AWS drops it; anything else is dropped.
 * Every accepted client may publish and subscribe to anything (no policy evaluation), at QoS 0
 * or 1 as AWS IoT Core: a SUBSCRIBE asking for QoS 2 is granted QoS 1, and a PUBLISH with QoS 2
 * ends the connection (the message goes nowhere).
 */
export async function createDataPlane(
  registry: IotRegistry,
  tls: { key: string; cert: string },
  onConnection: (outcome: ConnectionOutcome) => void,
): Promise<DataPlane> {
  const certificateIds = new WeakMap<Client, string>();
  const broker = await Aedes.createBroker({
    authorizePublish: (client, packet, callback) => {
      if (packet.topic.startsWith('$SYS/')) return callback(new Error('$SYS/ topic is reserved'));
      // aedes closes the connection on an error here, before it answers or delivers anything (a
      // will, published once the client is closed, keeps the QoS the client asked for)
      if (packet.qos === 2 && client !== null && !client.closed) {
        const reason = `PUBLISH with QoS 2 to ${packet.topic}: AWS IoT Core supports QoS 0 and 1 only and closes the connection; publish with QoS 0 or 1`;
        onConnection({ kind: 'dropped', certificateId: certificateIds.get(client) ?? '?', reason });
        return callback(new Error(reason));
      }
      callback(null);
    },
  });
  const server = createServer(
    { key: tls.key, cert: tls.cert, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' },
    (socket) => {
      let outcome: ConnectionOutcome;
      try {
        outcome = admit(registry, broker, socket);
      } catch (error) {
        outcome = { kind: 'refused', reason: `emulator failure: ${(error as Error).message}` };
      }
      onConnection(outcome);
      if (outcome.kind === 'accepted') {
        const client = broker.handle(socket);
        certificateIds.set(client, outcome.certificateId);
        grantAtMostQos1(client);
      } else socket.destroy();
    },
  );
  // A handshake that fails is an attempt too (mqtt:// on this port, a device that does not
  // trust server-ca.pem); a client that hangs up before saying anything is its own business.
  server.on('tlsClientError', (error: NodeJS.ErrnoException) => {
    if (error.code === 'ECONNRESET' || /socket disconnected/.test(error.message)) return;
    onConnection({ kind: 'refused', reason: `TLS handshake failed: ${handshakeProblem(error)}` });
  });
  // server.close() waits for every socket, and broker.close() only ends CONNECTed clients: a
  // client still in its TLS handshake (Node waits 120 s) or that never sends CONNECT would keep
  // close() pending, so every socket is tracked and destroyed on close.
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return {
    server,
    broker,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        broker.close();
        for (const socket of sockets) socket.destroy();
      }),
  };
}

function admit(registry: IotRegistry, broker: Aedes, socket: TLSSocket): ConnectionOutcome {
  const chain = peerChain(socket);
  const leaf = chain[0];
  if (leaf === undefined) return { kind: 'refused', reason: 'no client certificate' };
  const parsed = parseCertificate(leaf);
  // A chain check takes a certificate that is itself a trust anchor; AWS IoT takes no CA
  // certificate as a device's.
  const registeredCa = registry.cas.get(parsed.fingerprintSha256);
  if (parsed.isCa || registeredCa !== undefined) {
    return {
      kind: 'refused',
      reason:
        registeredCa !== undefined
          ? `client certificate is the registered CA certificate ${registeredCa.id}; connect with a device certificate it issued`
          : 'client certificate is a CA certificate (basicConstraints CA:TRUE); connect with a device certificate',
    };
  }
  const ca = registry.issuingCa(leaf, chain.slice(1), true);
  if (ca === undefined)
    return {
      kind: 'refused',
      reason: 'client certificate is not issued by a registered ACTIVE CA certificate',
    };
  const known = registry.certificates.get(parsed.fingerprintSha256);
  if (known !== undefined) {
    if (known.status === 'ACTIVE') return { kind: 'accepted', certificateId: known.id };
    return { kind: 'refused', reason: `certificate is ${known.status}`, certificateId: known.id };
  }
  if (ca.autoRegistrationStatus !== 'ENABLE') {
    return {
      kind: 'refused',
      reason: 'certificate is not registered and its CA does not allow auto-registration',
    };
  }
  const record = registry.addCertificate(parsed, ca.id, 'PENDING_ACTIVATION');
  const event = {
    certificateId: record.id,
    caCertificateId: ca.id,
    timestamp: Math.floor(Date.now() / 1000),
    certificateStatus: 'PENDING_ACTIVATION',
    awsAccountId: registry.account,
    certificateRegistrationTimestamp: null,
  };
  broker.publish(
    {
      cmd: 'publish',
      topic: `$aws/events/certificates/registered/${ca.id}`,
      payload: Buffer.from(JSON.stringify(event)),
      qos: 0,
      retain: false,
      dup: false,
    },
    () => {},
  );
  let provisioned = 'no provisioning template: the certificate stays PENDING_ACTIVATION';
  const body = ca.registrationConfig?.templateBody;
  if (body !== undefined) {
    try {
      const result = runProvisioningTemplate(registry, record, body);
      provisioned = `template applied: thing ${result.thingName ?? '(none)'}, certificate ${result.certificateStatus}, policies ${result.policies.join(', ') || '(none)'}`;
    } catch (error) {
      // The certificate is registered and announced already: whatever stopped the template,
      // the outcome is a JITP whose template failed (a template checks before it changes anything).
      const why =
        error instanceof ProvisioningError || error instanceof SyntaxError ? '' : 'emulator failure: ';
      provisioned = `template failed, the certificate stays PENDING_ACTIVATION: ${why}${(error as Error).message}`;
    }
  }
  return { kind: 'jitp', certificateId: record.id, caCertificateId: ca.id, provisioned };
}

/**
 * AWS IoT Core grants a SUBSCRIBE asking for QoS 2 at QoS 1. aedes takes the granted QoS (for
 * its SUBACK and its deliveries) from the packet before authorizeSubscribe sees it, so the
 * packet is changed as the client's parser emits it, before aedes handles it.
 */
function grantAtMostQos1(client: Client): void {
  const parser = (client as unknown as { _parser?: NodeJS.EventEmitter })._parser;
  if (parser === undefined) throw new Error('aedes changed: its client has no MQTT parser to hook');
  parser.prependListener('packet', (packet: { cmd: string; subscriptions?: { qos: number }[] }) => {
    if (packet.cmd !== 'subscribe') return;
    for (const subscription of packet.subscriptions ?? []) {
      if (subscription.qos > 1) subscription.qos = 1;
    }
  });
}

/** OpenSSL's reason from its error line (`…:SSL routines:<function>:<reason>:<file>:<line>:`), else the message. */
function handshakeProblem(error: Error): string {
  return /:SSL routines:[^:]*:([^:]+):/.exec(error.message)?.[1] ?? error.message.trim();
}

/** The client's certificates as DER, leaf first (what it sent; the server trusts nothing by itself). */
function peerChain(socket: TLSSocket): Uint8Array[] {
  const chain: Uint8Array[] = [];
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert?.raw !== undefined && chain.length < 10) {
    const raw = new Uint8Array(cert.raw);
    if (chain.some((c) => Buffer.compare(c, raw) === 0)) break;
    chain.push(raw);
    cert = cert.issuerCertificate;
  }
  return chain;
}
