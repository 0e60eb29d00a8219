import type { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { KeyferryError } from '@keyferry/core';
import type { Factory } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';
import {
  claimsDeviceCertificate,
  type RenewalCredential,
  verifyDeviceCertificate,
} from './device-certificate.ts';
import { type DeviceRecord, findActiveDevice } from './device-records.ts';
import { factoryForConnection } from './factory-host.ts';
import { type DeviceIdentity, type IdentityClaim, peerCertificate, socketIdentity } from './identity.ts';
import type { TrustAnchors } from './trust-anchors.ts';

/** An authenticated, allow-listed device on one factory's device-link. */
export interface DeviceSession {
  factory: Factory;
  identity: DeviceIdentity;
  device: DeviceRecord;
  /** Set when the caller authenticated with a device certificate: it may only renew that one. */
  renewal?: RenewalCredential;
}

/** What is known about a caller so far; the router audits refusals with it. */
export interface CallerTrace {
  factory?: Factory;
  claim: IdentityClaim;
  /** Set once the identity verified: only then is the claimed device id the caller's own. */
  verified?: boolean;
}

/**
 * Per connection, the client certificate when it claims to be one of the factory's device
 * certificates, else null: decided once, so a vendor identity's requests parse nothing more.
 */
const renewalLeaves = new WeakMap<TLSSocket, X509Certificate | null>();

function renewalLeaf(socket: TLSSocket, factory: Factory): X509Certificate | null {
  let leaf = renewalLeaves.get(socket);
  if (leaf === undefined) {
    const peer = peerCertificate(socket);
    leaf = peer && claimsDeviceCertificate(peer.x509, factory) ? peer.x509 : null;
    renewalLeaves.set(socket, leaf);
  }
  return leaf;
}

/**
 * Per connection, the allow-list row its first request found. A row only ever changes by being
 * deleted (removal from the allow-list), and every request writes in a transaction that
 * records the connection on the row and refuses when it is gone (`device_not_allowlisted`,
 * the transaction undone), so the connection's other requests need not read it again. A
 * device removed and added again while its connection is open gets a new row: it is refused
 * until it connects again.
 */
const allowListRows = new WeakMap<TLSSocket, DeviceRecord>();

/**
 * Authenticates a device-link call: factory from SNI, vendor identity verified for its
 * product, device on that factory's allow-list (in a group of the identity's product) — or,
 * for a renewal, a live device certificate the factory issued (device-certificate.ts).
 */
export async function authenticateDevice(
  db: Db,
  socket: TLSSocket,
  domain: string,
  anchors: TrustAnchors,
  trace: CallerTrace,
): Promise<DeviceSession> {
  const factory = await factoryForConnection(db, socket, domain);
  trace.factory = factory;
  const leaf = renewalLeaf(socket, factory);
  if (leaf) {
    const renewed = await verifyDeviceCertificate(db, factory, leaf);
    trace.claim.deviceId = renewed.device.deviceId;
    trace.claim.nc12 = renewed.device.nc12;
    return { factory, identity: renewed.identity, device: renewed.device, renewal: renewed.credential };
  }
  const identity = socketIdentity(socket, anchors, trace.claim);
  trace.verified = true;
  const device =
    allowListRows.get(socket) ?? (await findActiveDevice(db, factory.id, identity.deviceId.decimal));
  if (!device) {
    throw new KeyferryError(
      'device_not_allowlisted',
      `device ${identity.deviceId.decimal} (0x${identity.deviceId.hex}) is not on factory ${factory.name}'s allow-list; add it with: keyferry el2g devices add ${identity.nc12} 0x${identity.deviceId.hex}`,
    );
  }
  if (device.nc12 !== identity.nc12) {
    throw new KeyferryError(
      'device_not_allowlisted',
      `device ${identity.deviceId.decimal} is allow-listed for product ${device.nc12}, but its identity is for product ${identity.nc12}`,
    );
  }
  allowListRows.set(socket, device);
  return { factory, identity, device };
}
