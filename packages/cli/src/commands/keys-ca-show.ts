import { parseCertificate, serialToDecimal, splitPemBundle } from '@keyferry/core';
import { type Command, Option } from 'commander';
import { type CommandContext, commandContext } from '../context.ts';
import { printJson } from '../output.ts';
import { type FactoryCerts, getFactoryCerts } from '../pki/factory-certs.ts';

interface ShowOptions {
  justRoot?: boolean;
  justTls?: boolean;
  justDeviceCas?: boolean;
  pretty?: boolean;
}

export function registerShow(ca: Command): void {
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

/** fioctl's `keys ca show`: its section headers, each PEM followed by a blank line (Println). */
async function showCa(ctx: CommandContext, opts: ShowOptions): Promise<void> {
  const { api, out } = ctx;
  const certs = await getFactoryCerts(api);
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
  const cert = (pem: string) => `${opts.pretty ? prettyBundle(pem) : pem}\n`;
  // The --just-* forms are for `> root.crt` and pipes: the PEM alone, no blank line after it.
  const alone = (pem: string) => (opts.pretty ? prettyBundle(pem) : pem);
  if (opts.justRoot) return out.write(alone(certs['root-crt']));
  if (opts.justTls) return out.write(alone(certs['tls-crt']));
  if (opts.justDeviceCas) return out.write(alone(certs['ca-crt']) + disabledSection(certs));
  const meta = certs['change-meta'] ?? {};
  const lines = ['## Change Metadata', `Created at: ${meta['created-at'] ?? ''}`];
  if (meta['created-by']) lines.push(`Created by: ${meta['created-by']}`);
  if (meta['updated-at']) lines.push(`Updated at: ${meta['updated-at']}`);
  if (meta['updated-by']) lines.push(`Updated by: ${meta['updated-by']}`);
  out.write(
    `${lines.join('\n')}\n` +
      `## Factory root certificate\n${cert(certs['root-crt'])}` +
      `## Server TLS Certificate\n${cert(certs['tls-crt'])}` +
      `\n## Device Authentication Certificate(s)\n${cert(certs['ca-crt'])}` +
      disabledSection(certs),
  );
}

function disabledSection(certs: FactoryCerts): string {
  const serials = certs['disabled-ca-serials'] ?? [];
  if (serials.length === 0) return '';
  return `\n## Disabled Device Authentication Certificate Serial(s)\n${serials.map((s) => ` -  ${s}\n`).join('')}`;
}

function prettyBundle(pem: string): string {
  if (pem.trim() === '') return '';
  return splitPemBundle(pem)
    .map((der) => {
      const c = parseCertificate(der);
      const lines = [
        `Subject:    ${c.subject}`,
        `Issuer:     ${c.issuer}`,
        `Serial:     ${serialToDecimal(c.serialHex)} (0x${c.serialHex})`,
        `Not Before: ${c.notBefore.toISOString()}`,
        `Not After:  ${c.notAfter.toISOString()}`,
        `CA:         ${c.isCa ? `yes${c.pathLen !== undefined ? `, pathlen ${c.pathLen}` : ''}` : 'no'}`,
        `Key Usage:  ${c.keyUsage.join(', ') || '(none)'}`,
      ];
      if (c.extKeyUsage.length > 0) lines.push(`Ext Usage:  ${c.extKeyUsage.join(', ')}`);
      if (c.dnsNames.length > 0) lines.push(`DNS Names:  ${c.dnsNames.join(', ')}`);
      lines.push(`SHA-256:    ${c.fingerprintSha256}`);
      return `${lines.join('\n')}\n`;
    })
    .join('\n');
}
