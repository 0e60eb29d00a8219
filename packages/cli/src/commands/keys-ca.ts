import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  factoryRootProfile,
  fromPem,
  intermediateCaFromCsr,
  parseCsr,
  type Signer,
  softSigner,
  tlsServerFromCsr,
  toPem,
  verifyCsr,
} from '@keyferry/core';
import { type Command, Option } from 'commander';
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
  TLS_CERT_FILE,
  writeReadOnly,
} from '../pki/pki-dir.ts';
import {
  addHsmOptions,
  type Hsm,
  type HsmOptions,
  hsmFromOptions,
  ROOT_CERT_FILE,
  ROOT_KEY_FILE,
  ROOT_KEY_ID,
  ROOT_KEY_LABEL,
} from '../pki/root-key.ts';
import { registerDeviceCaCommands } from './keys-ca-device-cas.ts';
import { registerShow } from './keys-ca-show.ts';

export type { FactoryCerts } from '../pki/factory-certs.ts';

interface CreateOptions extends HsmOptions {
  onlineCa: boolean;
  localCa: boolean;
}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description("manage the factory's PKI");
  const ca = keys
    .command('ca')
    .description("the factory's offline root CA and the certificates it signs (fioctl keys ca)");
  addHsmOptions(
    pflagBooleans(ca.command('create'), ['--online-ca', '--local-ca'])
      .description(
        'create the offline root CA in <pki-dir>, sign the device gateway TLS certificate, and by default an online and a local device CA; upload them (once per factory)',
      )
      .argument(
        '<pki-dir>',
        'directory for factory_ca.key, factory_ca.pem, tls-crt, online-crt, local-ca.* (created; must be empty)',
      )
      .addOption(
        new Option(
          '--online-ca [bool]',
          'also an online device CA whose key keyferryd holds (--online-ca=false: none)',
        )
          .default(true)
          .argParser(parseBool('--online-ca')),
      )
      .addOption(
        new Option(
          '--local-ca [bool]',
          'also a local device CA, local-ca.key/local-ca.pem, for signing device certificates yourself (--local-ca=false: none)',
        )
          .default(true)
          .argParser(parseBool('--local-ca')),
      ),
    'make the root CA key on a PKCS#11 token',
  ).action(async (pkiDir: string, opts: CreateOptions, command: Command) => {
    await createCa(commandContext(command), resolve(pkiDir), hsmFromOptions(opts), opts);
  });
  addHsmOptions(
    ca
      .command('rotate-tls')
      .description('give the device gateway a new TLS key and certificate, signed by the root')
      .argument('<pki-dir>', 'the PKI dir keys ca create wrote'),
  ).action(async (pkiDir: string, opts: HsmOptions, command: Command) => {
    await rotateTls(commandContext(command), resolve(pkiDir), hsmFromOptions(opts));
  });
  registerDeviceCaCommands(ca);
  registerShow(ca);
}

/**
 * Go's pflag reads a boolean flag as `--flag` or `--flag=false`, never with its value in the next
 * word; commander would take that word (`--local-ca /path/pki`) as the optional value. A bare
 * flag is read as `--flag=true` instead, so the next word stays an argument.
 */
function pflagBooleans(cmd: Command, flags: readonly string[]): Command {
  const parse = cmd.parseOptions.bind(cmd);
  cmd.parseOptions = (args) => {
    const end = args.indexOf('--');
    return parse(args.map((a, i) => (flags.includes(a) && (end === -1 || i < end) ? `${a}=true` : a)));
  };
  return cmd;
}

/** `--flag`, `--flag=true` and `--flag=false`, as Go's pflag reads a boolean. */
export function parseBool(flag: string): (value: string) => boolean {
  return (value) => {
    if (['true', '1', 't'].includes(value.toLowerCase())) return true;
    if (['false', '0', 'f'].includes(value.toLowerCase())) return false;
    throw new CliError(`${flag} takes true or false, not ${JSON.stringify(value)}`, 2);
  };
}

async function createCa(
  ctx: CommandContext,
  pkiDir: string,
  hsm: Hsm | undefined,
  opts: CreateOptions,
): Promise<void> {
  const { api, out } = ctx;
  const step = stepPrinter(ctx.out);
  if (existsSync(pkiDir) && !statSync(pkiDir).isDirectory()) {
    throw new CliError(
      `${pkiDir} is a file, not a directory: keys ca create writes a PKI dir; name a new directory`,
    );
  }
  if (existsSync(pkiDir) && readdirSync(pkiDir).length > 0) {
    throw new CliError(`${pkiDir} is not empty: keys ca create never overwrites a PKI; name a new directory`);
  }
  // As fioctl: the service refuses first (409) when the factory already has a PKI.
  const csrs = await requestCsrs(api, {
    'first-time-init': true,
    'ca-csr': opts.onlineCa,
    'tls-csr': true,
  });
  const tlsCsr = verifyCsr(parseCsr(fromPem(csrs['tls-csr'] ?? '', 'CERTIFICATE REQUEST')));
  mkdirSync(pkiDir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  const write = (name: string, text: string) => written.push(writeReadOnly(pkiDir, name, text));
  const fields: Record<string, string> = {};
  let close = () => {};
  try {
    step('Creating offline root CA for Factory');
    let signer: Signer;
    if (hsm) {
      const { openToken } = await import('@keyferry/pkcs11');
      const token = openToken(hsm);
      close = () => token.close();
      if (token.findPrivateKey({ label: ROOT_KEY_LABEL }) !== undefined) {
        throw new CliError(
          `token ${hsm.tokenLabel} already holds a key labelled ${ROOT_KEY_LABEL}: use another token`,
        );
      }
      signer = token.signer(token.generateEcKeyPair({ label: ROOT_KEY_LABEL, id: ROOT_KEY_ID }).key);
    } else {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      write(ROOT_KEY_FILE, privateKey.export({ format: 'pem', type: 'sec1' }).toString());
      signer = softSigner(privateKey);
    }
    const root = await factoryRootProfile({ factory: api.factory!, signer });
    fields['root-crt'] = toPem(root, 'CERTIFICATE');
    write(ROOT_CERT_FILE, fields['root-crt']);

    step('Signing keyferry TLS CSR');
    const tls = await tlsServerFromCsr({ csr: tlsCsr, issuerCert: root, signer, dnsNames: tlsCsr.dnsNames });
    fields['tls-crt'] = toPem(tls, 'CERTIFICATE');
    write(TLS_CERT_FILE, fields['tls-crt']);

    const deviceCas: string[] = [];
    if (opts.onlineCa) {
      step('Signing keyferry CSR for online use');
      const csr = fromPem(csrs['ca-csr'] ?? '', 'CERTIFICATE REQUEST');
      const online = toPem(await intermediateCaFromCsr({ csr, issuerCert: root, signer }), 'CERTIFICATE');
      write(ONLINE_CA_CERT_FILE, online);
      deviceCas.push(online);
    }
    if (opts.localCa) {
      step('Creating local device CA');
      deviceCas.push(await createLocalCa(pkiDir, LOCAL_CA_CERT_FILE, api.factory!, { der: root, signer }));
      written.push(join(pkiDir, 'local-ca.key'), join(pkiDir, LOCAL_CA_CERT_FILE));
    }
    if (deviceCas.length > 0) fields['ca-crt'] = deviceCas.join('');
  } finally {
    close();
  }
  step('Uploading signed certs to keyferry');
  await patchFactoryCerts(api, fields);
  if (out.json)
    printJson(out, { factory: api.factory, pkiDir, files: written, hsm: hsm?.tokenLabel ?? null });
}

async function rotateTls(ctx: CommandContext, pkiDir: string, hsm: Hsm | undefined): Promise<void> {
  const { api, out } = ctx;
  const step = stepPrinter(ctx.out);
  const certs = await getFactoryCerts(api);
  const root = await openPkiRoot(pkiDir, hsm, certs['root-crt'], api.factory!);
  try {
    step('Requesting new keyferry TLS CSR');
    const csrs = await requestCsrs(api, { 'tls-csr': true });
    const csr = verifyCsr(parseCsr(fromPem(csrs['tls-csr'] ?? '', 'CERTIFICATE REQUEST')));
    moveAside(pkiDir, TLS_CERT_FILE, step, 'TLS cert');
    step('Signing keyferry TLS CSR');
    const tls = toPem(
      await tlsServerFromCsr({ csr, issuerCert: root.der, signer: root.signer, dnsNames: csr.dnsNames }),
      'CERTIFICATE',
    );
    writeReadOnly(pkiDir, TLS_CERT_FILE, tls);
    step('Uploading signed certs to keyferry');
    await patchFactoryCerts(api, { 'tls-crt': tls });
    if (out.json) printJson(out, { 'tls-crt': tls });
  } finally {
    root.close();
  }
}
