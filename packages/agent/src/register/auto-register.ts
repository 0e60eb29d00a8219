import { readFileSync } from 'node:fs';
import { deviceIdFromUid, parseCertificate, splitPemBundle } from '@keyferry/core';
import { AgentError } from '../agent-error.ts';
import { DeviceLinkClient } from '../device-link/client.ts';
import { type AssignedPair, assignedPairs } from '../device-link/manifest.ts';
import type { Log } from '../log.ts';
import { GATEWAY_CERT_ID, GATEWAY_KEY_ID, type SecureElement } from '../se/port.ts';
import { SoftSecureElement } from '../se/soft-se.ts';
import type { AgentSettings } from '../settings/settings.ts';
import { activeGatewaySlot, type GatewaySlot, writeSotaToml } from '../sota-toml.ts';
import { crashPoint } from './crash-point.ts';
import { type PairOutcome, provisionPair } from './provision-pair.ts';

/** Where the device-link is and the CA its TLS certificate is checked against (DEVICE_LINK_CA). */
export interface DeviceLinkTarget {
  hostname: string;
  connect: AgentSettings['el2goConnect'];
  ca: string | undefined;
}

export function deviceLinkTarget(settings: AgentSettings): DeviceLinkTarget {
  const ca =
    settings.deviceLinkCa === undefined
      ? undefined
      : readCertificateFile(settings.deviceLinkCa, 'DEVICE_LINK_CA');
  return { hostname: settings.el2goHostname, connect: settings.el2goConnect, ca };
}

/** Reads a PEM certificate file the settings name; unreadable or empty is `file_unreadable`. */
export function readCertificateFile(path: string, setting: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new AgentError(
      'file_unreadable',
      `${setting} ${path} cannot be read (${code}); install the file or fix ${setting}`,
      {
        cause: error,
      },
    );
  }
  let count = 0;
  try {
    count = splitPemBundle(text).length;
  } catch {
    count = 0;
  }
  if (count === 0) {
    throw new AgentError(
      'file_unreadable',
      `${setting} ${path} holds no PEM certificate; put the CA certificate there`,
    );
  }
  return text;
}

/** What one attempt did, for the closing line. */
export interface RegisterSummary {
  readonly changed: boolean;
  readonly outcomes: readonly PairOutcome[];
  readonly sotaToml: 'written' | 'unchanged';
}

/**
 * One auto-register attempt (packages/agent/README.md): connect with the SE identity, fetch the manifest,
 * provision every assigned pair, report, write sota.toml. The caller retries transient
 * failures and then starts aktualizr-lite.
 */
export async function registerOnce(options: {
  readonly settings: AgentSettings;
  readonly se: SecureElement;
  readonly log: Log;
  readonly now?: () => Date;
}): Promise<RegisterSummary> {
  const { settings, se, log } = options;
  const now = options.now ?? (() => new Date());
  const uid = deviceIdFromUid(se.uid());
  const identity = se.identity();
  const client = new DeviceLinkClient({ ...deviceLinkTarget(settings), identity });
  try {
    log.info(`Connecting to ${client.where} as device 0x${uid.hex}`);
    let manifest: Awaited<ReturnType<DeviceLinkClient['manifest']>>;
    try {
      manifest = await client.manifest();
    } catch (error) {
      throw explainRefusal(error, uid.hex, identity.certificateChain[0]);
    }
    // The gateway pair first: it is what sota.toml and aktualizr-lite need.
    const pairs = assignedPairs(manifest).sort(
      (a, b) =>
        Number(b.key.objectId === GATEWAY_KEY_ID) - Number(a.key.objectId === GATEWAY_KEY_ID) ||
        a.key.objectId - b.key.objectId,
    );
    log.info(
      `Manifest: ${pairs.length} key pair(s) assigned to ${manifest.group || 'this device'}: ` +
        (pairs.map((p) => `${p.key.name}/${p.certificate.name}`).join(', ') || 'none'),
    );
    if (!pairs.some((p) => p.key.objectId === GATEWAY_KEY_ID && p.certificate.objectId === GATEWAY_CERT_ID)) {
      throw new AgentError(
        'transient',
        'the factory assigns no device gateway pair (0x83000042/0x83000043) yet; ' +
          "the operator must run 'keyferry el2g config-device-gateway'",
      );
    }
    // After a rotation the gateway pair lives in the slot sota.toml names (keyferry-agent renew).
    const slot = activeGatewaySlot(settings);
    const outcomes: PairOutcome[] = [];
    for (const assigned of pairs) {
      const pair = assigned.key.objectId === GATEWAY_KEY_ID ? inSlot(assigned, slot) : assigned;
      try {
        outcomes.push(await provisionPair({ pair, se, client, uidHex: uid.hex, log, now }));
      } catch (error) {
        await reportFailure(client, pair, error, log);
        throw error;
      }
    }
    const toReport = outcomes.filter((o) => o.needsReport);
    if (toReport.length > 0) {
      await client.report(
        toReport.flatMap((o) => [
          { name: o.pair.key.name, status: 'SUCCESS' as const },
          { name: o.pair.certificate.name, status: 'SUCCESS' as const },
        ]),
      );
      log.info(
        `Reported ${toReport.map((o) => `${o.pair.key.name}, ${o.pair.certificate.name}`).join(', ')} as provisioned`,
      );
      crashPoint('after-report');
    }
    const sotaToml = writeSota(settings, se, log, slot);
    return { changed: outcomes.some((o) => o.generated || o.enrolled), outcomes, sotaToml };
  } finally {
    client.close();
  }
}

/** The gateway pair with the SE object ids of `slot` (the manifest names the primary ones). */
export function inSlot(pair: AssignedPair, slot: GatewaySlot): AssignedPair {
  return {
    key: { ...pair.key, objectId: slot.keyId },
    certificate: { ...pair.certificate, objectId: slot.certId, keyObjectId: slot.keyId },
  };
}

export function writeSota(
  settings: AgentSettings,
  se: SecureElement,
  log: Log,
  slot: GatewaySlot,
): 'written' | 'unchanged' {
  const soft =
    se instanceof SoftSecureElement
      ? { keyPath: se.keyPath(slot.keyId), certificatePath: se.certificatePath(slot.certId) }
      : undefined;
  let result: 'written' | 'unchanged';
  try {
    result = writeSotaToml(settings, soft, slot);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new AgentError(
      'sota_write',
      `cannot write ${settings.sotaDir}/sota.toml (${code}); check SOTA_DIR`,
      {
        cause: error,
      },
    );
  }
  log.info(`${settings.sotaDir}/sota.toml ${result === 'written' ? 'written' : 'unchanged'}`);
  return result;
}

/**
 * Tells the service a pair failed in the secure element (key generation, CSR signing,
 * storing the certificate), so `el2g devices show` says why: GENERATION_FAILED before the
 * certificate was issued, PROVISIONING_FAILED after. Best effort: the SE failure is what the
 * agent exits with; a report that does not get through is only a warning.
 */
async function reportFailure(
  client: DeviceLinkClient,
  pair: AssignedPair,
  error: unknown,
  log: Log,
): Promise<void> {
  if (!(error instanceof AgentError) || !error.kind.startsWith('se_')) return;
  const detail = error.message.slice(0, 500);
  try {
    await client.report([
      { name: pair.key.name, status: 'FAILED', detail },
      { name: pair.certificate.name, status: 'FAILED', detail },
    ]);
    log.info(`Reported ${pair.key.name}, ${pair.certificate.name} as failed`);
  } catch (reportError) {
    const why = reportError instanceof Error ? reportError.message : String(reportError);
    log.warn(`Could not report ${pair.key.name}, ${pair.certificate.name} as failed: ${why}`);
  }
}

/** Not allow-listed: say exactly which command adds this device. */
function explainRefusal(error: unknown, uidHex: string, identityCert: Uint8Array | undefined): unknown {
  if (!(error instanceof AgentError) || error.kind !== 'not_allowlisted') return error;
  let product = '<12nc>';
  try {
    product = identityCert ? (parseCertificate(identityCert).subjectAttributes.OU ?? product) : product;
  } catch {
    // keep the placeholder
  }
  return new AgentError(
    'not_allowlisted',
    `device 0x${uidHex} is not on the factory's allow-list (${error.message}); ` +
      `add it with: keyferry el2g devices add ${product} 0x${uidHex}`,
    { cause: error },
  );
}
