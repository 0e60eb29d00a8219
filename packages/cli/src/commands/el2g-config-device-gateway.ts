import { resolve } from 'node:path';
import {
  fromPem,
  intermediateCaFromCsr,
  parseCertificate,
  parseCsr,
  publicKeysEqual,
  splitPemBundle,
  toPem,
  verifyCsr,
} from '@keyferry/core';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { type CommandContext, commandContext } from '../context.ts';
import { printJson } from '../output.ts';
import { openPkiRoot } from '../pki/pki-dir.ts';
import { addHsmOptions, type Hsm, type HsmOptions, hsmFromOptions } from '../pki/root-key.ts';
import type { FactoryCerts } from './keys-ca.ts';

interface PutAnswer {
  id: number;
  name: string;
  value: string;
  created: boolean;
  assigned: number;
}

/** `keyferry el2g config-device-gateway --pki-dir DIR [--hsm-*]`. */
export function registerEl2gConfigDeviceGateway(el2g: Command): void {
  const command = el2g
    .command('config-device-gateway')
    .description(
      'have the service make the fio-device-gateway-ca key, sign its CSR with the factory root (locally), and trust the new CA at the device gateway',
    )
    .requiredOption('--pki-dir <dir>', 'the PKI dir keys ca create wrote (factory_ca.pem, factory_ca.key)');
  addHsmOptions(command).action(async (opts: HsmOptions & { pkiDir: string }, command: Command) => {
    await configDeviceGateway(commandContext(command), resolve(opts.pkiDir), hsmFromOptions(opts));
  });
}

async function configDeviceGateway(ctx: CommandContext, pkiDir: string, hsm: Hsm | undefined): Promise<void> {
  const { api, out } = ctx;
  const step = (text: string) => {
    if (!out.json) out.write(`${text}\n`);
  };
  const certs = await api.call<FactoryCerts>('GET', api.factoryPath('certs/'));
  if (certs['root-crt'].trim() === '') {
    throw new CliError(
      `factory ${api.factory} has no root CA yet: run keyferry keys ca create <pki-dir> first`,
    );
  }
  // the root certificate of the dir must be the factory's, and the key must be the root's
  const root = await openPkiRoot(pkiDir, hsm, certs['root-crt'], api.factory ?? '');
  const rootDer = root.der;
  try {
    // fioctl's four steps, in its order, one line each; what keyferry adds comes after
    step('Requesting CSR from keyferry');
    const request = await api.call<{ id: number; value: string }>(
      'POST',
      api.factoryPath('el2g/device-gateway/'),
    );
    const csr = verifyCsr(parseCsr(fromPem(request.value, 'CERTIFICATE REQUEST')));
    step('Signing CSR');
    const ca = await intermediateCaFromCsr({ csr, issuerCert: rootDer, signer: root.signer });
    const caPem = toPem(ca, 'CERTIFICATE');
    step('Uploading signed certificate');
    const answer = await api.call<PutAnswer>('PUT', api.factoryPath('el2g/device-gateway/'), {
      id: request.id,
      'root-ca': toPem(rootDer, 'CERTIFICATE'),
      'signed-cert': caPem,
    });
    step("Updating factory allowed CA's with");
    step(caPem);
    const current = await api.call<FactoryCerts>('GET', api.factoryPath('certs/'));
    const bundle = mergeCaBundle(current['ca-crt'], ca);
    if (bundle !== undefined) await api.call('PATCH', api.factoryPath('certs/'), { 'ca-crt': bundle });
    step(
      answer.created
        ? `Created intermediate CA ${answer.name} (ID ${answer.id})`
        : `Replaced the key and certificate of intermediate CA ${answer.name} (ID ${answer.id})`,
    );
    step(
      bundle === undefined
        ? 'The device gateway already trusted it (ca-crt unchanged)'
        : 'The device gateway trusts it now (added to ca-crt)',
    );
    if (out.json) {
      printJson(out, { id: answer.id, name: answer.name, created: answer.created, value: caPem });
    }
  } finally {
    root.close();
  }
}

/**
 * The ca-crt bundle with `ca` appended, or undefined when it is already there. An older entry
 * with the same subject and key is replaced; older CAs with other keys stay, so devices that
 * already hold certificates from them keep connecting.
 */
export function mergeCaBundle(bundle: string, ca: Uint8Array): string | undefined {
  const entries = bundle.trim() === '' ? [] : splitPemBundle(bundle);
  const added = parseCertificate(ca);
  if (entries.some((der) => Buffer.compare(Buffer.from(der), Buffer.from(ca)) === 0)) return undefined;
  const kept = entries.filter((der) => {
    const c = parseCertificate(der);
    return !(c.subject.text === added.subject.text && publicKeysEqual(c.spki, added.spki));
  });
  return [...kept, ca].map((der) => toPem(der, 'CERTIFICATE')).join('');
}
