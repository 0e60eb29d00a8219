import { createCsr, deviceIdFromUid, parseCertificate, publicKeysEqual } from '@keyferry/core';
import { AgentError } from '../agent-error.ts';
import { DeviceLinkClient } from '../device-link/client.ts';
import { type AssignedPair, assignedPairs, type Manifest } from '../device-link/manifest.ts';
import type { Log } from '../log.ts';
import { type DeviceLinkTarget, deviceLinkTarget, inSlot, writeSota } from '../register/auto-register.ts';
import { crashPoint } from '../register/crash-point.ts';
import { seSigner } from '../register/provision-pair.ts';
import { GATEWAY_CERT_ID, GATEWAY_KEY_ID, type SecureElement, seLabel } from '../se/port.ts';
import type { AgentSettings } from '../settings/settings.ts';
import {
  ALTERNATE_GATEWAY_SLOT,
  activeGatewaySlot,
  type GatewaySlot,
  PRIMARY_GATEWAY_SLOT,
} from '../sota-toml.ts';

/** Renewal window when the manifest does not say (the service's default, 30 days). */
export const DEFAULT_WINDOW_SECONDS = 30 * 86_400;

/** What one renew run did, for the closing line and the daemon's next check. */
export interface RenewSummary {
  /** A new key and certificate took over (sota.toml switched, reported, old objects deleted). */
  readonly rotated: boolean;
  /** The slot sota.toml names after the run. */
  readonly slot: GatewaySlot;
  /** When the certificate in use enters its renewal window (the daemon's next check). */
  readonly dueAt: Date | undefined;
}

export interface RenewOptions {
  readonly settings: AgentSettings;
  readonly se: SecureElement;
  readonly log: Log;
  readonly now?: () => Date;
  /** Rotate even outside the window (`renew --force`). */
  readonly force?: boolean;
  /**
   * 0 ≤ jitter < 1: renew from this fraction into the first half of the window, so a fleet
   * provisioned together does not renew together. `renew` uses 0, the daemon a random one.
   */
  readonly jitter?: number;
}

interface SlotState {
  readonly spki: Uint8Array | undefined;
  /** The stored certificate when it certifies the slot's key. */
  readonly cert: { der: Uint8Array; serial: string; notAfter: Date } | undefined;
}

function slotState(se: SecureElement, slot: GatewaySlot): SlotState {
  const spki = se.publicKey(slot.keyId);
  const der = se.getCertificate(slot.certId);
  if (spki === undefined || der === undefined) return { spki, cert: undefined };
  try {
    const parsed = parseCertificate(der);
    if (!publicKeysEqual(parsed.spki, spki)) return { spki, cert: undefined };
    return { spki, cert: { der, serial: parsed.serialHex, notAfter: parsed.notAfter } };
  } catch {
    return { spki, cert: undefined };
  }
}

function otherSlot(slot: GatewaySlot): GatewaySlot {
  return slot.keyId === PRIMARY_GATEWAY_SLOT.keyId ? ALTERNATE_GATEWAY_SLOT : PRIMARY_GATEWAY_SLOT;
}

/** When a certificate of `notAfter` is due for renewal under the manifest's window and the jitter. */
export function renewalDueAt(pair: AssignedPair, notAfter: Date, jitter = 0): Date {
  const renewal = pair.certificate.renewal;
  const window = renewal?.windowSeconds ?? (renewal ? renewal.windowDays * 86_400 : DEFAULT_WINDOW_SECONDS);
  const start = notAfter.getTime() - window * 1000;
  return new Date(start + Math.min(Math.max(jitter, 0), 0.999) * 0.5 * window * 1000);
}

function gatewayPair(manifest: Manifest): AssignedPair {
  const pair = assignedPairs(manifest).find(
    (p) => p.key.objectId === GATEWAY_KEY_ID && p.certificate.objectId === GATEWAY_CERT_ID,
  );
  if (!pair) {
    throw new AgentError(
      'transient',
      'the factory assigns no device gateway pair (0x83000042/0x83000043) yet; ' +
        "the operator must run 'keyferry el2g config-device-gateway'",
    );
  }
  return pair;
}

/**
 * One renew run of the device gateway pair (packages/agent/README.md, "Renewal and key
 * rotation"): two slots, the one sota.toml names and the free one. When the certificate in use
 * is inside its renewal window, or the manifest says `rotate`, or with `force`: a new key in
 * the free slot, `simplereenroll` over mutual TLS with the certificate in use (the vendor
 * identity when that one has expired), the new certificate stored in the free slot, sota.toml
 * switched atomically, the report (the service then revokes the old certificate), and only
 * then the old objects deleted. Each step is found done on a rerun, so a crash between any
 * two leaves a device that connects with the old pair or the new one, and the next run
 * converges.
 */
export async function renewOnce(options: RenewOptions): Promise<RenewSummary> {
  const { settings, se, log } = options;
  const now = options.now ?? (() => new Date());
  const link = deviceLinkTarget(settings);
  const client = new DeviceLinkClient({ ...link, identity: se.identity() });
  try {
    const manifest = await client.manifest();
    const primary = gatewayPair(manifest);
    let active = activeGatewaySlot(settings);
    let free = otherSlot(active);
    const live = primary.certificate.certificateSerial;
    const inUse = slotState(se, active);
    const fresh = slotState(se, free);
    const report = async (pair: AssignedPair) => {
      await client.report([
        { name: pair.key.name, status: 'SUCCESS' },
        { name: pair.certificate.name, status: 'SUCCESS' },
      ]);
      log.info(`Reported ${pair.key.name}, ${pair.certificate.name} as provisioned`);
      crashPoint('after-report');
    };
    const deleteSlot = (slot: GatewaySlot) => {
      const removed = se.delete(slot.keyId) + se.delete(slot.certId);
      if (removed > 0) log.info(`Deleted the old ${seLabel(slot.keyId)} and ${seLabel(slot.certId)}`);
      crashPoint('after-delete');
    };

    // A run that died after storing the new certificate: the free slot holds the service's
    // live one, the slot in use an older one. Finish from the switch on.
    const resumeSwitch =
      fresh.cert !== undefined && fresh.cert.serial === live && inUse.cert?.serial !== live;
    if (!resumeSwitch) {
      if (inUse.cert === undefined) {
        throw new AgentError(
          'transient',
          `no certificate for key ${seLabel(active.keyId)} in ${seLabel(active.certId)} (the slot sota.toml names); ` +
            'run keyferry-agent auto-register first',
        );
      }
      const dueAt = renewalDueAt(primary, inUse.cert.notAfter, options.jitter);
      const rotate = primary.certificate.rotate;
      // A key in the free slot without its certificate: a run died between keygen and store.
      const inProgress = fresh.spki !== undefined && fresh.cert === undefined;
      // The service names its live certificate, and it is not the one in use: that one was
      // revoked (the device deleted from the allow-list and added again: none is live), or a
      // run died after the service issued its successor. The gateway may refuse it, and so
      // may the renewal over it: the new pair is enrolled with the vendor identity.
      const notLive = live !== undefined && live !== inUse.cert.serial;
      const due = options.force === true || rotate || inProgress || notLive || now() >= dueAt;
      if (!due) {
        // A run that died after the switch or the report leaves the old objects in the free
        // slot: report again (the service keeps only the newest) and delete them.
        if (fresh.spki !== undefined || se.getCertificate(free.certId) !== undefined) {
          if (fresh.cert !== undefined) await report(inSlot(primary, active));
          deleteSlot(free);
        }
        log.info(
          `${primary.certificate.name}: certificate ${seLabel(active.certId)} (serial ${inUse.cert.serial}) ` +
            `valid until ${inUse.cert.notAfter.toISOString()}, renewal due from ${dueAt.toISOString()}`,
        );
        return { rotated: false, slot: active, dueAt };
      }
      log.info(
        `${primary.certificate.name}: ${
          options.force
            ? 'rotation forced'
            : rotate
              ? 'the service asks for a rotation'
              : inProgress
                ? 'finishing the rotation a previous run began'
                : notLive
                  ? `the certificate in use (serial ${inUse.cert.serial}) is not the service's live one (${live ?? 'none: revoked'})`
                  : 'inside the renewal window'
        }; new key in ${seLabel(free.keyId)}`,
      );
      await enrollInFreeSlot({
        se,
        log,
        pair: inSlot(primary, free),
        free,
        inUse: { slot: active, state: inUse },
        fresh,
        link,
        now,
        uidHex: deviceIdFromUid(se.uid()).hex,
        // none live: the service renews nothing, the pair is enrolled anew (simpleenroll)
        enrollment: !notLive ? 'renew' : live === null ? 'enroll' : 'renew-by-identity',
      });
    }
    writeSota(settings, se, log, free);
    crashPoint('after-switch');
    [active, free] = [free, active];
    await report(inSlot(primary, active));
    deleteSlot(free);
    const stored = slotState(se, active).cert;
    return {
      rotated: true,
      slot: active,
      dueAt: stored && renewalDueAt(primary, stored.notAfter, options.jitter),
    };
  } finally {
    client.close();
  }
}

/** Key (kept when a crashed run made it), CSR, simplereenroll, store: the new pair in `free`. */
async function enrollInFreeSlot(o: {
  readonly se: SecureElement;
  readonly log: Log;
  readonly pair: AssignedPair;
  readonly free: GatewaySlot;
  readonly inUse: { slot: GatewaySlot; state: SlotState };
  readonly fresh: SlotState;
  readonly link: DeviceLinkTarget;
  readonly now: () => Date;
  readonly uidHex: string;
  /**
   * `renew`: simplereenroll over the certificate in use (the vendor identity once it expired);
   * `renew-by-identity`: simplereenroll with the vendor identity; `enroll`: simpleenroll with
   * the vendor identity, for a pair of which the service holds no live certificate.
   */
  readonly enrollment: 'renew' | 'renew-by-identity' | 'enroll';
}): Promise<void> {
  const { se, log, pair, free } = o;
  let spki = o.fresh.spki;
  if (spki === undefined) {
    se.delete(free.certId);
    spki = se.generateKeyPair(free.keyId);
    log.info(`${pair.key.name}: generated key ${seLabel(free.keyId)} in the secure element`);
    crashPoint('after-keygen');
  } else {
    log.info(`${pair.key.name}: key ${seLabel(free.keyId)} already in the secure element, kept`);
  }
  const current = o.inUse.state.cert;
  // The certificate in use proves the device at the TLS layer; once expired only the vendor
  // identity can renew (the service refuses an expired certificate).
  const byCertificate = o.enrollment === 'renew' && current !== undefined && current.notAfter > o.now();
  const identity = byCertificate
    ? { certificateChain: [current.der], tls: se.tlsKey(o.inUse.slot.keyId) }
    : se.identity();
  const enroller = new DeviceLinkClient({ ...o.link, identity });
  let certs: Uint8Array[];
  try {
    const csr = await createCsr({ subject: { CN: o.uidHex }, signer: seSigner(se, free.keyId, spki) });
    certs = await enroller.simpleEnroll(pair.certificate.name, csr, o.enrollment !== 'enroll');
  } finally {
    enroller.close();
  }
  const issued = certs.find((der) => publicKeysEqual(parseCertificate(der).spki, spki));
  if (!issued) {
    throw new AgentError(
      'refused',
      `${pair.certificate.name}: the service answered the renewal with no certificate for key ${seLabel(free.keyId)}`,
    );
  }
  const parsed = parseCertificate(issued);
  log.info(
    `${pair.certificate.name}: ${o.enrollment === 'enroll' ? 'enrolled' : 'renewed'} with ${byCertificate ? `the certificate in ${seLabel(o.inUse.slot.certId)}` : 'the vendor identity'}, ` +
      `certificate serial ${parsed.serialHex} valid until ${parsed.notAfter.toISOString()}`,
  );
  crashPoint('after-enroll');
  se.putCertificate(free.certId, issued);
  log.info(`${pair.certificate.name}: stored certificate as ${seLabel(free.certId)}`);
  crashPoint('after-store');
}
