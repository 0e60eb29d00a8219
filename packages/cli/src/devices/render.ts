import { formatTable } from '../output.ts';

/**
 * A table printed row by row, in `formatTable`'s layout (columns padded to the widest cell + 2,
 * dashes under the headers), for lists too long to hold: the widths are fixed up front.
 */
export class StreamingTable {
  readonly #widths: number[];
  constructor(
    readonly headers: readonly string[],
    widths: readonly number[],
  ) {
    this.#widths = headers.map((h, i) => Math.max(h.length, widths[i] ?? 0));
  }

  head(): string {
    return this.line(this.headers) + this.line(this.headers.map((h) => '-'.repeat(h.length)));
  }

  line(cells: readonly string[]): string {
    return (
      cells
        .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(Math.max(this.#widths[i] ?? 0, c.length) + 2)))
        .join('')
        .trimEnd() + '\n'
    );
  }
}

/** `devices show`, as fioctl printed it. */
export function formatDeviceShow(
  product: { commercialName: string; nc12: string },
  objects: ReadonlyArray<{
    secureObjectName: string;
    secureObjectType: string;
    provisioningState: string;
    certificate: string | null;
    renewal?: {
      notAfter: string;
      renewFrom: string;
      renewedValidityDays: number;
      rotationRequestedAt?: string | null;
    };
  }>,
): string {
  let text = `Hardware Type: ${product.commercialName}\nHardware 12NC: ${product.nc12}\nSecure Objects:\n`;
  text += formatTable(
    ['NAME', 'TYPE', 'STATUS'],
    objects.map((o) => [o.secureObjectName, o.secureObjectType, o.provisioningState]),
    '\t',
  );
  const certs = objects.filter((o) => o.certificate);
  if (certs.length > 0) {
    text += 'Certificates:\n';
    for (const o of certs) {
      const pem = o.certificate!;
      text += `# ${o.secureObjectName}\n${pem.endsWith('\n') ? pem : `${pem}\n`}`;
    }
  }
  const renewals = objects.filter((o) => o.renewal);
  if (renewals.length > 0) {
    text += 'Renewal:\n';
    text += formatTable(
      ['NAME', 'EXPIRES', 'RENEW FROM', 'RENEWED VALIDITY', 'ROTATION'],
      renewals.map((o) => [
        o.secureObjectName,
        o.renewal!.notAfter,
        o.renewal!.renewFrom,
        `${o.renewal!.renewedValidityDays} days`,
        o.renewal!.rotationRequestedAt ? `requested ${o.renewal!.rotationRequestedAt}` : '-',
      ]),
      '\t',
    );
  }
  return text;
}

/** A CERTIFICATE object as the provisioning API lists it, with its renewal settings. */
export interface RenewalSettings {
  name: string;
  type: string;
  renewalValidityDays: number | null;
  renewalWindowDays: number | null;
}

/** The renewal section of `el2g status` (after fioctl's four): per certificate object, how it renews. */
export function formatRenewalSection(objects: readonly RenewalSettings[]): string {
  const certs = objects.filter((o) => o.type === 'CERTIFICATE' && o.renewalValidityDays !== null);
  if (certs.length === 0) return '';
  return `# Certificate Renewal\n${formatTable(
    ['NAME', 'RENEWED VALIDITY', 'RENEW FROM'],
    certs.map((o) => [o.name, `${o.renewalValidityDays} days`, `${o.renewalWindowDays} days before expiry`]),
    '\t',
  )}`;
}

/** GET el2g/plan/ */
export interface PlanUsage {
  kind: 'evaluation' | 'commercial';
  enabledAt: string;
  evaluationEndsAt: string | null;
  evaluationDays: number;
  evaluationExpired: boolean;
  subscriptionYear: { start: string; end: string };
  devices: { used: number; max: number };
  maxKeypairsPerDevice: number;
  maxCertificatesPerDevice: number;
}

/** The plan section `el2g status` prints after fioctl's four. */
export function formatPlanSection(plan: PlanUsage): string {
  const day = (iso: string) => iso.slice(0, 10);
  const lines = ['# Plan', `Kind: ${plan.kind}`];
  if (plan.kind === 'evaluation' && plan.evaluationEndsAt) {
    lines.push(
      `Evaluation: ${plan.evaluationDays} days from ${day(plan.enabledAt)}, ` +
        (plan.evaluationExpired ? `ended ${plan.evaluationEndsAt}` : `ends ${plan.evaluationEndsAt}`),
    );
  }
  lines.push(
    `Subscription year: ${day(plan.subscriptionYear.start)} to ${day(plan.subscriptionYear.end)}`,
    `Devices: ${plan.devices.used} of ${plan.devices.max} used this subscription year`,
    `Per device: at most ${plan.maxKeypairsPerDevice} key pairs and ${plan.maxCertificatesPerDevice} certificates`,
  );
  return lines.join('\n') + '\n';
}
