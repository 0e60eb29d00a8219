import {
  type DeviceCertificateTemplate,
  deviceCertificateTemplate,
  fromPem,
  KeyferryError,
  parseCertificate,
  type Signer,
  splitPemBundle,
  type ValidityPeriod,
} from '@keyferry/core';
import { sql } from 'kysely';
import { type CustodySigner, custodySignerById, type KeyCustody } from '../keys/custody.ts';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';

/** An intermediate CA ready to issue: its certificate, key and the device template. */
export interface IssuingCa {
  id: number;
  certificate: Uint8Array;
  /** The factory root, when the factory PKI has one (for cacerts). */
  root: Uint8Array | undefined;
  signer: Signer;
  template: DeviceCertificateTemplate;
}

/**
 * Issuing CAs by (CA row, its version, validity). The template holds no secret and the signer
 * is the custody backend's; both are built once per CA version, not per enrollment.
 */
export class IssuingCas {
  readonly #templates = new Map<string, IssuingCa>();
  readonly #signers = new Map<string, CustodySigner>();

  constructor(
    private readonly db: Db,
    private readonly custody: KeyCustody,
  ) {}

  async get(
    factory: { id: number; name: string },
    caId: number,
    validity: ValidityPeriod | null,
  ): Promise<IssuingCa> {
    // which version of the CA this is, without its PEMs: the cache hits on nearly every call
    return this.ofVersion(factory, caId, (await caVersion(this.db, factory.id, caId)).rows[0], validity);
  }

  /** The CA of a version already read (an enrollment reads it with the plan, plan-gate.ts). */
  async ofVersion(
    factory: { id: number; name: string },
    caId: number,
    version: CaVersion | undefined,
    validity: ValidityPeriod | null,
  ): Promise<IssuingCa> {
    if (!version)
      throw new KeyferryError('internal', `intermediate CA ${caId} of factory ${factory.name} is missing`);
    const key = `${version.id}|${version.updated_at}|${version.key_ref}|${validity === null ? '' : JSON.stringify(validity)}|${version.root_length ?? 0}`;
    const cached = this.#templates.get(key);
    if (cached) return cached;
    const row = await this.db
      .selectFrom('intermediate_cas')
      .leftJoin('factory_pki', 'factory_pki.factory_id', 'intermediate_cas.factory_id')
      .select([
        'intermediate_cas.id',
        'intermediate_cas.key_ref',
        'intermediate_cas.certificate',
        'factory_pki.root_crt',
      ])
      .where('intermediate_cas.id', '=', version.id)
      .executeTakeFirstOrThrow();
    let signer = this.#signers.get(row.key_ref);
    if (!signer) {
      signer = await custodySignerById(this.db, this.custody, row.key_ref);
      this.#signers.set(row.key_ref, signer);
    }
    const certificate = fromPem(row.certificate, 'CERTIFICATE');
    const issuing: IssuingCa = {
      id: row.id,
      certificate,
      // A self-signed CA (aws-iot-ca) is its own chain's root; the factory root is not above it.
      root: row.root_crt && !selfSigned(certificate) ? splitPemBundle(row.root_crt)[0] : undefined,
      signer,
      template: deviceCertificateTemplate({
        issuerCert: certificate,
        factory: factory.name,
        ...(validity === null ? {} : { validity }),
      }),
    };
    this.#templates.set(key, issuing);
    return issuing;
  }
}

/** Which version of an intermediate CA is current: what IssuingCas keys its cache by. */
export interface CaVersion {
  id: number;
  key_ref: string;
  updated_at: string;
  root_length: number | null;
}

const caVersion = compiledOnce((db, [factoryId, caId]: [number, number]) =>
  db
    .selectFrom('intermediate_cas')
    .leftJoin('factory_pki', 'factory_pki.factory_id', 'intermediate_cas.factory_id')
    .select([
      'intermediate_cas.id',
      'intermediate_cas.key_ref',
      'intermediate_cas.updated_at',
      sql<number | null>`length(factory_pki.root_crt)`.as('root_length'),
    ])
    .where('intermediate_cas.factory_id', '=', factoryId)
    .where('intermediate_cas.id', '=', caId),
);

function selfSigned(der: Uint8Array): boolean {
  const cert = parseCertificate(der);
  return Buffer.compare(Buffer.from(cert.issuer.der), Buffer.from(cert.subject.der)) === 0;
}
