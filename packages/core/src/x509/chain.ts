import { KeyferryError } from '../errors.ts';
import { type ParsedCertificate, parseCertificate, verifyCertificateSignature } from './certificate.ts';
import { bytesEqual } from './der.ts';
import type { ExtKeyUsageName } from './oids.ts';

/** Most intermediates accepted between a leaf and its anchor (real chains here have one). */
export const MAX_CHAIN_INTERMEDIATES = 8;

/** Options of {@link verifyChain}. */
export interface VerifyChainOptions {
  /** When set, a leaf with an extKeyUsage extension must list this purpose (or any). */
  readonly purpose?: ExtKeyUsageName;
}

/**
 * Validates `leaf` up to one of `anchors` through `intermediates` at time `now`: signatures,
 * validity periods, issuer/subject name chaining, CA flags and keyCertSign, path lengths and
 * unknown critical extensions. Returns the path from leaf to anchor. Throws
 * `certificate_invalid` for input that does not parse and `untrusted_chain` with the reason
 * for every candidate path that failed.
 */
export function verifyChain(
  leaf: Uint8Array,
  intermediates: readonly Uint8Array[],
  anchors: readonly Uint8Array[],
  now: Date,
  options: VerifyChainOptions = {},
): ParsedCertificate[] {
  if (intermediates.length > MAX_CHAIN_INTERMEDIATES) {
    throw distrust(
      `chain has ${intermediates.length} intermediates; the limit is ${MAX_CHAIN_INTERMEDIATES}`,
    );
  }
  const leafCert = parseLabelled(leaf, 'leaf certificate');
  const pool = intermediates.map((der, i) => parseLabelled(der, `intermediate certificate #${i + 1}`));
  const roots = anchors.map((der, i) => parseLabelled(der, `trust anchor #${i + 1}`));
  const leafProblem = usable(leafCert, now);
  if (leafProblem !== undefined) throw distrust(leafProblem);
  const purpose = options.purpose;
  if (purpose !== undefined && leafCert.extKeyUsage.length > 0) {
    const ok = leafCert.extKeyUsage.includes(purpose) || leafCert.extKeyUsage.includes('anyExtendedKeyUsage');
    if (!ok) throw distrust(`certificate ${leafCert.subject.text} is not valid for ${purpose}`);
  }
  if (roots.some((root) => bytesEqual(root.der, leafCert.der))) return [leafCert];

  const reasons: string[] = [];
  const path: ParsedCertificate[] = [leafCert];
  const found = extend(path, pool, roots, now, reasons);
  if (found) return path;
  throw distrust(`untrusted certificate chain: ${[...new Set(reasons)].join('; ')}`, { reasons });
}

/** Depth-first search for an issuer of the last certificate in `path`; `path` holds the result. */
function extend(
  path: ParsedCertificate[],
  pool: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
  now: Date,
  reasons: string[],
): boolean {
  const child = path[path.length - 1]!;
  // The number of intermediates that would sit below a CA added now (RFC 5280 §4.2.1.9).
  const below = path.length - 1;
  let named = false;
  for (const root of roots) {
    if (!sameName(root.subject.der, child.issuer.der, root.subject.text, child.issuer.text)) continue;
    named = true;
    const problem = issues(root, child, below, now);
    if (problem === undefined) {
      path.push(root);
      return true;
    }
    reasons.push(problem);
  }
  for (const candidate of pool) {
    if (path.includes(candidate)) continue;
    if (!sameName(candidate.subject.der, child.issuer.der, candidate.subject.text, child.issuer.text))
      continue;
    named = true;
    const problem = issues(candidate, child, below, now);
    if (problem !== undefined) {
      reasons.push(problem);
      continue;
    }
    path.push(candidate);
    if (extend(path, pool, roots, now, reasons)) return true;
    path.pop();
  }
  if (!named) reasons.push(`no trusted issuer ${child.issuer.text} found for ${child.subject.text}`);
  return false;
}

/** Why `issuer` cannot have issued `child` at `now`, or undefined when it can. */
function issues(
  issuer: ParsedCertificate,
  child: ParsedCertificate,
  below: number,
  now: Date,
): string | undefined {
  const name = issuer.subject.text;
  if (!issuer.isCa) return `issuer ${name} is not a CA (basicConstraints)`;
  if (issuer.keyUsage.length > 0 && !issuer.keyUsage.includes('keyCertSign')) {
    return `issuer ${name} may not sign certificates (keyUsage lacks keyCertSign)`;
  }
  if (issuer.pathLen !== undefined && below > issuer.pathLen) {
    return `issuer ${name} allows ${issuer.pathLen} intermediate(s) below it, the chain has ${below}`;
  }
  if (!verifyCertificateSignature(child, issuer.spki)) {
    return `signature of ${child.subject.text} does not verify with the key of ${name}`;
  }
  return usable(issuer, now);
}

/** Why a certificate is unusable on its own at `now`, or undefined. */
function usable(cert: ParsedCertificate, now: Date): string | undefined {
  const name = cert.subject.text;
  if (now.getTime() < cert.notBefore.getTime()) {
    return `certificate ${name} is not valid before ${cert.notBefore.toISOString()}`;
  }
  if (now.getTime() > cert.notAfter.getTime())
    return `certificate ${name} expired at ${cert.notAfter.toISOString()}`;
  if (cert.unknownCriticalExtensions.length > 0) {
    return `certificate ${name} has unknown critical extension(s) ${cert.unknownCriticalExtensions.join(', ')}`;
  }
  return undefined;
}

// Byte equality covers names copied as RFC 5280 asks; the case-insensitive text comparison
// covers issuers that re-encoded a name (another string type) without changing it.
function sameName(a: Uint8Array, b: Uint8Array, aText: string, bText: string): boolean {
  return bytesEqual(a, b) || aText.toLowerCase() === bText.toLowerCase();
}

function parseLabelled(der: Uint8Array, label: string): ParsedCertificate {
  try {
    return parseCertificate(der);
  } catch (error) {
    if (error instanceof KeyferryError) throw new KeyferryError(error.code, `${label}: ${error.message}`);
    throw error;
  }
}

function distrust(message: string, detail?: Record<string, unknown>): KeyferryError {
  return new KeyferryError('untrusted_chain', message, detail === undefined ? undefined : { detail });
}
