import { rmSync, writeFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import { type AddressInfo, isIP, type Server } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createControlPlane } from './control-plane.ts';
import { type ConnectionOutcome, createDataPlane } from './data-plane.ts';
import { IotRegistry } from './registry.ts';
import { serverIdentity } from './server-identity.ts';
import { type AwsCredentials, DEFAULT_CREDENTIALS } from './sigv4.ts';

export const ENDPOINTS_FILE = 'endpoints.json';

/** A host and port to listen on; port 0 picks a free one. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface AwsIotEmulatorOptions {
  /** Control plane (HTTP); default 127.0.0.1:0. */
  readonly listen?: ListenAddress;
  /** Data plane (MQTT over TLS); default 127.0.0.1:0. */
  readonly mqttListen?: ListenAddress;
  /**
   * The host devices are told to connect to (mqttEndpoint, DescribeEndpoint), also put in the
   * server certificate; default the mqttListen host, or this machine's host name when that is a
   * wildcard address (0.0.0.0, ::), which no device can connect to.
   */
  readonly mqttHost?: string;
  /** Where server-ca.pem (+ key) and endpoints.json live. */
  readonly stateDir: string;
  readonly credentials?: AwsCredentials;
  readonly region?: string;
  readonly account?: string;
  /** Called for every MQTT connection attempt (the CLI logs them). */
  readonly onConnection?: (outcome: ConnectionOutcome) => void;
}

/** What scripts and tests need to reach a running emulator (also written to endpoints.json). */
export interface AwsIotEndpoints {
  /** Base URL of the control plane: give it to IoTClient as `endpoint`. */
  readonly controlUrl: string;
  /** host:port of the MQTT over TLS listener (DescribeEndpoint's endpointAddress). */
  readonly mqttEndpoint: string;
  /** PEM file of the CA that signed the MQTT listener's certificate. */
  readonly serverCaFile: string;
  readonly region: string;
  readonly accessKeyId: string;
}

export interface AwsIotEmulator extends AwsIotEndpoints {
  readonly registry: IotRegistry;
  close(): Promise<void>;
}

/** Starts the AWS IoT Core emulator: control plane, MQTT broker, endpoints.json. */
export async function startAwsIotEmulator(options: AwsIotEmulatorOptions): Promise<AwsIotEmulator> {
  const listen = options.listen ?? { host: '127.0.0.1', port: 0 };
  const mqttListen = options.mqttListen ?? { host: '127.0.0.1', port: 0 };
  const credentials = options.credentials ?? DEFAULT_CREDENTIALS;
  const registry = new IotRegistry({
    ...(options.region === undefined ? {} : { region: options.region }),
    ...(options.account === undefined ? {} : { account: options.account }),
  });
  // a previous run's endpoints are not this one's: gone until both listeners are up
  const endpointsFile = join(options.stateDir, ENDPOINTS_FILE);
  rmSync(endpointsFile, { force: true });
  const mqttHost = options.mqttHost ?? (isWildcard(mqttListen.host) ? hostname() : mqttListen.host);
  const identity = await serverIdentity(options.stateDir, mqttHost);
  const data = await createDataPlane(registry, identity, options.onConnection ?? (() => {}));
  let mqttPort: number;
  try {
    mqttPort = await listenOn(data.server, mqttListen);
  } catch (error) {
    await data.close(); // the broker's timers would keep the process alive
    throw error;
  }
  const mqttEndpoint = `${hostForUrl(mqttHost)}:${mqttPort}`;
  const control = createControlPlane(registry, credentials, () => mqttEndpoint);
  let controlPort: number;
  try {
    controlPort = await listenOn(control, listen);
  } catch (error) {
    await data.close();
    throw error;
  }
  const endpoints: AwsIotEndpoints = {
    // on a wildcard address too: this machine's name, which a client elsewhere can reach
    controlUrl: `http://${hostForUrl(isWildcard(listen.host) ? hostname() : listen.host)}:${controlPort}`,
    mqttEndpoint,
    serverCaFile: identity.caFile,
    region: registry.region,
    accessKeyId: credentials.accessKeyId,
  };
  writeFileSync(endpointsFile, `${JSON.stringify(endpoints, null, 2)}\n`);
  return {
    ...endpoints,
    registry,
    close: async () => {
      // no script may take a stopped emulator's endpoints for a running one's
      rmSync(endpointsFile, { force: true });
      await Promise.all([closeHttp(control), data.close()]);
    },
  };
}

function listenOn(server: Server, address: ListenAddress): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** An address that means "every interface": one to listen on, never one to connect to. */
function isWildcard(host: string): boolean {
  return isIP(host) !== 0 && /^[0.:]+$/.test(host);
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
