import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  buildCrl,
  fromPem,
  intermediateCaFromCsr,
  parseCertificate,
  parseCrl,
  type RevocationReason,
  serialFromDecimal,
  serialToDecimal,
  splitPemBundle,
  toPem,
} from '@keyferry/core';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { type CommandContext, commandContext } from '../context.ts';
import { printJson, stepPrinter } from '../output.ts';
import { getFactoryCerts, patchFactoryCerts, requestCsrs } from '../pki/factory-certs.ts';
import {
  createLocalCa,
  LOCAL_CA_CERT_FILE,
  moveAside,
  ONLINE_CA_CERT_FILE,
  openPkiRoot,
  pkiFile,
  writeReadOnly,
} from '../pki/pki-dir.ts';
import { addHsmOptions, type Hsm, type HsmOptions, hsmFromOptions } from '../pki/root-key.ts';

/** fioctl's CRLs are a message to the service, not a published list: short-lived on purpose. */
const REVOCATION_CRL_MINUTES = 15;

interface AddOptions extends HsmOptions {
  onlineCa?: boolean;
  localCa?: boolean;
  localCaFilename: string;
}

interface RevokeOptions extends HsmOptions {
  caFile: string[];
  caSerial: string[];
  dryRun?: boolean;
  pretty?: boolean;
}

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerDeviceCaCommands(ca: Command): void {
  addHsmOptions(
    ca
      .command('add-device-ca')
      .description('add a device CA to those the device gateway trusts for device client certificates')
      .argument('<pki-dir>', 'the PKI dir keys ca create wrote')
      .option('--online-ca', 'a new online device CA whose key keyferryd holds')
      .option('--local-ca', 'a new local device CA whose key you keep in the PKI dir')
      .option(
        '--local-ca-filename <name>',
        'file name of the local CA (when local-ca.pem exists)',
        LOCAL_CA_CERT_FILE,
      ),
  ).action(async (pkiDir: string, opts: AddOptions, command: Command) => {
    await addDeviceCa(commandContext(command), resolve(pkiDir), hsmFromOptions(opts), opts);
  });
  for (const [name, reason, what] of [
    [
      'revoke-device-ca',
      'privilegeWithdrawn',
      'revoke: the gateway refuses devices with certificates it issued, at once',
    ],
    [
      'disable-device-ca',
      'certificateHold',
      'disable: it registers no new devices; devices already known keep connecting',
    ],
  ] as const) {
    addHsmOptions(
      ca
        .command(name)
        .description(`${what.split(':')[0]} device CAs with a CRL the root signs (${what.split(': ')[1]})`)
        .argument('<pki-dir>', 'the PKI dir keys ca create wrote')
        .option(
          '--ca-file <file>',
          'a device CA certificate file (a name in the PKI dir or a path); repeatable',
          collect,
          [],
        )
        .option('--ca-serial <serial>', 'a device CA serial in base 10; repeatable', collect, [])
        .option('--serial <serial>', 'the same as --ca-serial', collect, [])
        .option('--dry-run', 'print the CRL that would be uploaded, and upload nothing')
        .option('--pretty', 'with --dry-run: also decode the CRL'),
    ).action(async (pkiDir: string, opts: RevokeOptions & { serial: string[] }, command: Command) => {
      const options = { ...opts, caSerial: [...opts.caSerial, ...opts.serial] };
      await revokeDeviceCa(commandContext(command), resolve(pkiDir), hsmFromOptions(opts), options, reason);
    });
  }
  ca.command('update')
    .description('replace the list of device CAs the device gateway trusts with the bundle in <ca-crts-file>')
    .argument('<ca-crts-file>', 'PEM bundle of device CA certificates')
    .option('--remove-device-cas', 'the bundle may leave out device CAs (keyferryd refuses that otherwise)')
    .action(async (file: string, opts: { removeDeviceCas?: boolean }, command: Command) => {
      const ctx = commandContext(command);
      let bundle: string;
      try {
        bundle = readFileSync(file, 'utf8');
      } catch (err) {
        throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
      }
      await patchFactoryCerts(ctx.api, {
        'ca-crt': bundle,
        ...(opts.removeDeviceCas ? { 'remove-device-cas': true } : {}),
      });
      if (ctx.out.json)
        printJson(ctx.out, { 'ca-crt': bundle, 'remove-device-cas': opts.removeDeviceCas === true });
    });
}

async function addDeviceCa(ctx: CommandContext, pkiDir: string, hsm: Hsm | undefined, opts: AddOptions) {
  const { api, out } = ctx;
  const step = stepPrinter(ctx.out);
  if (!opts.localCa && !opts.onlineCa)
    throw new CliError('At least one of --online-ca or --local-ca must be true', 2);
  if (opts.localCaFilename.includes('/')) {
    throw new CliError(`--local-ca-filename must be a file name, not a path: ${opts.localCaFilename}`, 2);
  }
  step('Fetching a list of existing device CAs');
  const certs = await getFactoryCerts(api);
  const root = await openPkiRoot(pkiDir, hsm, certs['root-crt'], api.factory!);
  const added: string[] = [];
  try {
    if (opts.localCa) {
      step('Creating local device CA');
      added.push(await createLocalCa(pkiDir, opts.localCaFilename, api.factory!, root));
    }
    if (opts.onlineCa) {
      step('Requesting new keyferry Online Device CA CSR');
      const csrs = await requestCsrs(api, { 'ca-csr': true });
      moveAside(pkiDir, ONLINE_CA_CERT_FILE, step, 'online device CA');
      step('Signing keyferry CSR for online use');
      const csr = fromPem(csrs['ca-csr'] ?? '', 'CERTIFICATE REQUEST');
      const online = toPem(
        await intermediateCaFromCsr({ csr, issuerCert: root.der, signer: root.signer }),
        'CERTIFICATE',
      );
      writeReadOnly(pkiDir, ONLINE_CA_CERT_FILE, online);
      added.push(online);
    }
  } finally {
    root.close();
  }
  step('Uploading signed certs to keyferry');
  await patchFactoryCerts(api, { 'ca-crt': [certs['ca-crt'], ...added].filter((p) => p !== '').join('\n') });
  if (out.json) printJson(out, { added });
}

async function revokeDeviceCa(
  ctx: CommandContext,
  pkiDir: string,
  hsm: Hsm | undefined,
  opts: RevokeOptions,
  reason: RevocationReason,
) {
  const { api, out } = ctx;
  const step = stepPrinter(ctx.out);
  if (opts.caFile.length + opts.caSerial.length === 0) {
    throw new CliError('At least one of --ca-file or --ca-serial must be provided', 2);
  }
  // every serial and CA file is checked before the first step is printed or anything is asked
  const serials = new Set<string>();
  for (const serial of opts.caSerial) {
    if (!/^[0-9]{1,49}$/.test(serial)) throw new CliError(`Value ${serial} is not a valid base 10 serial`, 2);
    serials.add(serialToDecimal(serialFromDecimal(serial)));
  }
  for (const name of opts.caFile) {
    const file = pkiFile(pkiDir, name);
    let der: Uint8Array;
    try {
      der = fromPem(readFileSync(file, 'utf8'), 'CERTIFICATE');
    } catch (err) {
      throw new CliError(`cannot read the device CA ${file}: ${(err as Error).message}`);
    }
    serials.add(serialToDecimal(parseCertificate(der).serialHex));
  }
  step('Generating Certificate Revocation List');
  const certs = await getFactoryCerts(api);
  const trusted = new Set(
    (certs['ca-crt'].trim() === '' ? [] : splitPemBundle(certs['ca-crt'])).map((der) =>
      serialToDecimal(parseCertificate(der).serialHex),
    ),
  );
  for (const serial of serials) {
    if (!trusted.has(serial)) throw new CliError(`There is no actual device CA with serial ${serial}`);
  }
  const root = await openPkiRoot(pkiDir, hsm, certs['root-crt'], api.factory!);
  let crl: string;
  try {
    step('Signing CRL by factory root CA');
    const now = new Date();
    const der = await buildCrl({
      issuerCert: root.der,
      signer: root.signer,
      revoked: [...serials].map((serial) => ({
        serialHex: serialFromDecimal(serial),
        revokedAt: now,
        reason,
      })),
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + REVOCATION_CRL_MINUTES * 60_000),
      crlNumber: 1,
    });
    crl = toPem(der, 'X509 CRL');
  } finally {
    root.close();
  }
  if (opts.dryRun) {
    if (out.json) {
      return printJson(out, {
        'ca-revoke-crl': crl,
        serials: [...serials],
        'dry-run': true,
        ...(opts.pretty ? { pretty: prettyCrl(crl) } : {}),
      });
    }
    out.write(crl);
    if (opts.pretty) out.write(prettyCrl(crl));
    return;
  }
  step('Uploading CRL to keyferry');
  await patchFactoryCerts(api, { 'ca-revoke-crl': crl });
  if (out.json) printJson(out, { 'ca-revoke-crl': crl, serials: [...serials] });
}

function prettyCrl(pem: string): string {
  const crl = parseCrl(fromPem(pem, 'X509 CRL'));
  const lines = [
    'Certificate Revocation List:',
    `\tIssuer: ${crl.issuer.text}`,
    '\tValidity:',
    `\t\tNot Before: ${crl.thisUpdate.toISOString()}`,
    `\t\tNot After: ${crl.nextUpdate?.toISOString() ?? '(none)'}`,
    '\tRevoked Certificates:',
  ];
  for (const entry of crl.entries) {
    lines.push(`\t\tSerial: ${serialToDecimal(entry.serialHex)}`);
    lines.push(`\t\t\tRevocation Date: ${entry.revokedAt.toISOString()}`);
    if (entry.reasonCode !== undefined) lines.push(`\t\t\tReason Code: ${entry.reasonCode}`);
  }
  return `${lines.join('\n')}\n`;
}
