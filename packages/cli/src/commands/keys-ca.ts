import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  factoryRootProfile,
  fromPem,
  parseCertificate,
  parseCsr,
  softSigner,
  splitPemBundle,
  tlsServerFromCsr,
  toPem,
  verifyCsr,
} from '@keyferry/core';
import { type Command, Option } from 'commander';
import { CliError } from '../cli-error.ts';
import { type CommandContext, commandContext } from '../context.ts';
import { printJson } from '../output.ts';
import {
  type Hsm,
  type HsmOptions,
  hsmFromOptions,
  ROOT_CERT_FILE,
  ROOT_KEY_FILE,
  ROOT_KEY_ID,
  ROOT_KEY_LABEL,
} from '../pki/root-key.ts';

export interface FactoryCerts {
  'root-crt': string;
  'tls-crt': string;
  'ca-crt': string;
  'tls-csr': string;
}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description("manage the factory's PKI");
  const ca = keys.command('ca').description("the factory's offline root CA and the certificates it signs");
  ca.command('create')
    .description(
      'create the offline root CA in <pki-dir>, sign the device gateway TLS certificate, upload them',
    )
    .argument('<pki-dir>', 'directory for factory_ca.key, factory_ca.pem, tls-crt (created; must be empty)')
    .option('--hsm-module <path>', 'PKCS#11 module keeping the root key on a token')
    .option('--hsm-pin <pin>', 'user PIN of that token')
    .option('--hsm-token-label <label>', 'label of that token')
    .action(async (pkiDir: string, opts: HsmOptions, command: Command) => {
      await createCa(commandContext(command), resolve(pkiDir), hsmFromOptions(opts));
    });
  ca.command('show')
    .description("show the factory's root, device gateway TLS and device CA certificates")
    .addOption(
      new Option('--just-root', 'print only the root certificate PEM').conflicts([
        'justTls',
        'justDeviceCas',
      ]),
    )
    .addOption(
      new Option('--just-tls', 'print only the device gateway TLS certificate').conflicts(['justDeviceCas']),
    )
    .option('--just-device-cas', 'print only the CAs the device gateway trusts for client certificates')
    .option('--pretty', 'decode the certificates instead of printing PEM')
    .action(async (opts: ShowOptions, command: Command) => {
      await showCa(commandContext(command), opts);
    });
}

async function createCa(ctx: CommandContext, pkiDir: string, hsm: Hsm | undefined): Promise<void> {
  const { api, out } = ctx;
  if (existsSync(pkiDir) && readdirSync(pkiDir).length > 0) {
    throw new CliError(`${pkiDir} is not empty: keys ca create never overwrites a PKI; name a new directory`);
  }
  const certsPath = api.factoryPath('certs/');
  const current = await api.call<FactoryCerts>('GET', certsPath);
  if (current['root-crt'].trim() !== '') {
    throw new CliError(`factory ${api.factory} already has a root CA: keys ca create runs once per factory`);
  }
  const csr = parseCsr(fromPem(current['tls-csr'], 'CERTIFICATE REQUEST'));
  verifyCsr(csr);

  const step = (text: string) => {
    if (!out.json) out.write(text + '\n');
  };
  step(`Creating offline root CA for factory ${api.factory} in ${pkiDir}`);
  mkdirSync(pkiDir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  const writeReadOnly = (name: string, text: string) => {
    const path = join(pkiDir, name);
    writeFileSync(path, text, { mode: 0o400, flag: 'wx' });
    chmodSync(path, 0o400);
    written.push(path);
  };

  let root: Uint8Array;
  let tls: Uint8Array;
  let close = () => {};
  try {
    let signer: Parameters<typeof factoryRootProfile>[0]['signer'];
    if (hsm) {
      const { openToken } = await import('@keyferry/pkcs11');
      const token = openToken(hsm);
      close = () => token.close();
      if (token.findPrivateKey({ label: ROOT_KEY_LABEL }) !== undefined) {
        throw new CliError(
          `token ${hsm.tokenLabel} already holds a key labelled ${ROOT_KEY_LABEL}: use another token`,
        );
      }
      const key = token.generateEcKeyPair({ label: ROOT_KEY_LABEL, id: ROOT_KEY_ID });
      signer = token.signer(key.key);
      step(`  |-> root key generated on token ${hsm.tokenLabel} (label ${ROOT_KEY_LABEL})`);
    } else {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      writeReadOnly(ROOT_KEY_FILE, privateKey.export({ format: 'pem', type: 'sec1' }).toString());
      signer = softSigner(privateKey);
      step(`  |-> ${join(pkiDir, ROOT_KEY_FILE)}`);
    }
    root = await factoryRootProfile({ factory: api.factory!, signer });
    writeReadOnly(ROOT_CERT_FILE, toPem(root, 'CERTIFICATE'));
    step(`  |-> ${join(pkiDir, ROOT_CERT_FILE)}`);
    step('Signing the device gateway TLS certificate');
    tls = await tlsServerFromCsr({ csr, issuerCert: root, signer, dnsNames: csr.dnsNames });
    writeReadOnly('tls-crt', toPem(tls, 'CERTIFICATE'));
    step(`  |-> ${join(pkiDir, 'tls-crt')}`);
  } finally {
    close();
  }
  step('Uploading root-crt and tls-crt to keyferryd');
  await api.call('PATCH', certsPath, {
    'root-crt': toPem(root, 'CERTIFICATE'),
    'tls-crt': toPem(tls, 'CERTIFICATE'),
  });
  if (out.json)
    printJson(out, { factory: api.factory, pkiDir, files: written, hsm: hsm?.tokenLabel ?? null });
  else step('Done: keep this directory offline and backed up; the service never sees the root key');
}

interface ShowOptions {
  justRoot?: boolean;
  justTls?: boolean;
  justDeviceCas?: boolean;
  pretty?: boolean;
}

async function showCa(ctx: CommandContext, opts: ShowOptions): Promise<void> {
  const { api, out } = ctx;
  const certs = await api.call<FactoryCerts>('GET', api.factoryPath('certs/'));
  const sections: Array<[string, string]> = [];
  if (opts.justRoot) sections.push(['', certs['root-crt']]);
  else if (opts.justTls) sections.push(['', certs['tls-crt']]);
  else if (opts.justDeviceCas) sections.push(['', certs['ca-crt']]);
  else {
    sections.push(['## Factory root CA (root-crt)', certs['root-crt']]);
    sections.push(['## Device gateway TLS certificate (tls-crt)', certs['tls-crt']]);
    sections.push(['## CAs the device gateway trusts for devices (ca-crt)', certs['ca-crt']]);
  }
  if (out.json) {
    const pick = opts.justRoot
      ? 'root-crt'
      : opts.justTls
        ? 'tls-crt'
        : opts.justDeviceCas
          ? 'ca-crt'
          : undefined;
    return printJson(out, pick ? { [pick]: certs[pick] } : certs);
  }
  if ((opts.justRoot || opts.justTls) && sections[0]?.[1].trim() === '') {
    throw new CliError(`factory ${api.factory} has no PKI yet: run keyferry keys ca create <pki-dir> first`);
  }
  const parts = sections.map(([title, pem]) => {
    const body = pem.trim() === '' ? '(none)\n' : opts.pretty ? prettyBundle(pem) : ensureNewline(pem);
    return title ? `${title}\n${body}` : body;
  });
  out.write(parts.join('\n'));
}

function ensureNewline(text: string): string {
  return text.endsWith('\n') ? text : text + '\n';
}

function prettyBundle(pem: string): string {
  return splitPemBundle(pem)
    .map((der) => {
      const c = parseCertificate(der);
      const lines = [
        `Subject:    ${c.subject}`,
        `Issuer:     ${c.issuer}`,
        `Serial:     ${c.serialHex}`,
        `Not Before: ${c.notBefore.toISOString()}`,
        `Not After:  ${c.notAfter.toISOString()}`,
        `CA:         ${c.isCa ? `yes${c.pathLen !== undefined ? `, pathlen ${c.pathLen}` : ''}` : 'no'}`,
        `Key Usage:  ${c.keyUsage.join(', ') || '(none)'}`,
      ];
      if (c.extKeyUsage.length > 0) lines.push(`Ext Usage:  ${c.extKeyUsage.join(', ')}`);
      if (c.dnsNames.length > 0) lines.push(`DNS Names:  ${c.dnsNames.join(', ')}`);
      lines.push(`SHA-256:    ${c.fingerprintSha256}`);
      return lines.join('\n') + '\n';
    })
    .join('\n');
}
