import { AgentError } from '../agent-error.ts';
import { parseObjectId } from '../settings/settings.ts';

/** One secure object the service assigned to this device. */
export interface ManifestObject {
  readonly name: string;
  readonly type: 'KEYPAIR' | 'CERTIFICATE';
  readonly objectId: number;
  /** For a CERTIFICATE: the KEYPAIR object whose key it certifies. */
  readonly keyObjectId: number | undefined;
  /** The PKCS#11 label on the device (`SE_83000042`). The EST path label is the object's `name`. */
  readonly label: string;
  readonly state: string;
  /**
   * For a CERTIFICATE: the serial of the live certificate the service holds for this device,
   * null when it holds none (revoked, or the device was deleted and added again), undefined
   * when the service does not say.
   */
  readonly certificateSerial: string | null | undefined;
  /** For a CERTIFICATE: the operator asked for a rotation (new key in the other slot). */
  readonly rotate: boolean;
  /** For a CERTIFICATE: how renewed certificates live and when to renew, when the service says. */
  readonly renewal: RenewalSettings | undefined;
}

/** The manifest's `renewal` of a CERTIFICATE: the window is what the agent acts on. */
export interface RenewalSettings {
  readonly validityDays: number;
  readonly windowDays: number;
  /** Finer than days (short-lived certificates); when given it wins over windowDays. */
  readonly windowSeconds: number | undefined;
}

function renewalOf(value: unknown): RenewalSettings | undefined {
  const r = value as Record<string, unknown> | null | undefined;
  if (!r || typeof r !== 'object') return undefined;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);
  const validityDays = num(r.validityDays);
  const windowDays = num(r.windowDays);
  if (validityDays === undefined || windowDays === undefined) return undefined;
  return { validityDays, windowDays, windowSeconds: num(r.windowSeconds) };
}

export interface Manifest {
  readonly device: string;
  readonly product: string;
  readonly group: string;
  readonly objects: readonly ManifestObject[];
}

/** A KEYPAIR and the CERTIFICATE for its key: what the agent provisions as one unit. */
export interface AssignedPair {
  readonly key: ManifestObject;
  readonly certificate: ManifestObject;
}

/** Largest number of objects read from a manifest (the plan allows 2 pairs per device). */
export const MAX_MANIFEST_OBJECTS = 64;

function objectId(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xffffffff) return value;
  return typeof value === 'string' ? parseObjectId(value) : undefined;
}

/** Reads the manifest JSON; anything malformed is a refusal naming what is wrong. */
export function parseManifest(body: Buffer, where: string): Manifest {
  const bad = (why: string) => new AgentError('refused', `the manifest from ${where} is malformed: ${why}`);
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw bad('not JSON');
  }
  const m = json as Record<string, unknown>;
  if (!m || typeof m !== 'object' || !Array.isArray(m.objects)) throw bad('no objects list');
  if (m.objects.length > MAX_MANIFEST_OBJECTS) throw bad(`more than ${MAX_MANIFEST_OBJECTS} objects`);
  const objects = m.objects.map((raw, i): ManifestObject => {
    const o = (raw ?? {}) as Record<string, unknown>;
    const id = objectId(o.objectId);
    if (
      typeof o.name !== 'string' ||
      (o.type !== 'KEYPAIR' && o.type !== 'CERTIFICATE') ||
      id === undefined
    ) {
      throw bad(`object #${i + 1} lacks a name, a type (KEYPAIR | CERTIFICATE) or an objectId`);
    }
    const keyId = o.keyObjectId === undefined || o.keyObjectId === null ? undefined : objectId(o.keyObjectId);
    return {
      name: o.name,
      type: o.type,
      objectId: id,
      keyObjectId: keyId,
      label: typeof o.label === 'string' ? o.label : o.name,
      state: typeof o.state === 'string' ? o.state : '',
      certificateSerial:
        typeof o.certificateSerial === 'string' || o.certificateSerial === null
          ? (o.certificateSerial?.toLowerCase() ?? null)
          : undefined,
      rotate: o.rotate === true,
      renewal: renewalOf(o.renewal),
    };
  });
  const text = (v: unknown) => (typeof v === 'string' ? v : '');
  return { device: text(m.device), product: text(m.product), group: text(m.group), objects };
}

/**
 * Pairs each CERTIFICATE with its KEYPAIR (by keyObjectId, else the key at objectId − 1, the
 * SE05x convention 0x83000042/0x83000043). A certificate without its key is a refusal: the
 * agent cannot make a CSR for a key it was not told to make.
 */
export function assignedPairs(manifest: Manifest): AssignedPair[] {
  const keys = new Map(manifest.objects.filter((o) => o.type === 'KEYPAIR').map((o) => [o.objectId, o]));
  return manifest.objects
    .filter((o) => o.type === 'CERTIFICATE')
    .map((certificate) => {
      const key = keys.get(certificate.keyObjectId ?? certificate.objectId - 1);
      if (!key) {
        throw new AgentError(
          'refused',
          `the manifest assigns certificate ${certificate.name} without its key pair; check the factory's secure objects`,
        );
      }
      return { key, certificate };
    });
}
