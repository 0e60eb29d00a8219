import type { ApiClient } from '../api-client.ts';
import { CliError } from '../cli-error.ts';

/** GET certs/ as keyferryd answers it (fioctl's `CaCerts`, plus the pending `tls-csr`). */
export interface FactoryCerts {
  'root-crt': string;
  'tls-crt': string;
  'ca-crt': string;
  'tls-csr': string;
  'ca-revoke-crl'?: string;
  'disabled-ca-serials'?: string[];
  'change-meta'?: {
    'created-at'?: string;
    'created-by'?: string;
    'updated-at'?: string;
    'updated-by'?: string;
  };
}

/** POST certs/ (fioctl's `CaCreateOptions`) and its answer (`CaCsrs`). */
export interface CsrOptions {
  'first-time-init': boolean;
  'ca-csr': boolean;
  'tls-csr': boolean;
  'est-tls-csr': boolean;
}
export interface Csrs {
  'tls-csr'?: string;
  'ca-csr'?: string;
}

/** fioctl's message for a 206 from GET certs/, naming keyferry's command. */
export const PKI_NOT_CONFIGURED = 'Factory PKI is not configured. Please, see `keyferry keys ca create`.';

/** GET certs/ of a factory whose PKI is set up; 206 (none yet) is fioctl's error. */
export async function getFactoryCerts(api: ApiClient): Promise<FactoryCerts> {
  const { body, status } = await api.callWithHeaders<FactoryCerts>('GET', api.factoryPath('certs/'));
  if (status === 206) throw new CliError(PKI_NOT_CONFIGURED);
  return body;
}

export async function requestCsrs(api: ApiClient, options: Partial<CsrOptions>): Promise<Csrs> {
  const body: CsrOptions = {
    'first-time-init': false,
    'ca-csr': false,
    'tls-csr': false,
    'est-tls-csr': false,
    ...options,
  };
  return api.call<Csrs>('POST', api.factoryPath('certs/'), body);
}

/** PATCH certs/ with the changed fields and an empty change-meta, as fioctl sends it. */
export async function patchFactoryCerts(api: ApiClient, fields: Record<string, unknown>): Promise<void> {
  await api.call('PATCH', api.factoryPath('certs/'), {
    ...fields,
    'change-meta': { 'created-by': '', 'created-at': '', 'updated-by': '', 'updated-at': '' },
  });
}
