import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '@keyferry/core';
import { pkcs11IdFor } from './se/pkcs11-ids.ts';
import { alternateObjectId, GATEWAY_CERT_ID, GATEWAY_KEY_ID, seLabel } from './se/port.ts';
import type { AgentSettings } from './settings/settings.ts';

/** Where the soft backend keeps the gateway key and certificate (file sources instead of pkcs11). */
export interface SoftGatewayFiles {
  readonly keyPath: string;
  readonly certificatePath: string;
}

/** The gateway key and certificate sota.toml names: the primary slot or its rotation slot. */
export interface GatewaySlot {
  readonly keyId: number;
  readonly certId: number;
}

export const PRIMARY_GATEWAY_SLOT: GatewaySlot = { keyId: GATEWAY_KEY_ID, certId: GATEWAY_CERT_ID };
export const ALTERNATE_GATEWAY_SLOT: GatewaySlot = {
  keyId: alternateObjectId(GATEWAY_KEY_ID),
  certId: alternateObjectId(GATEWAY_CERT_ID),
};

/** A TOML basic string: quotes, backslashes and control characters escaped. */
function str(value: string): string {
  const named: Record<string, string> = { '\\': '\\\\', '"': '\\"', '\n': '\\n', '\t': '\\t', '\r': '\\r' };
  let escaped = '';
  for (const c of value) {
    const code = c.charCodeAt(0);
    const control = code < 0x20 || code === 0x7f;
    escaped += named[c] ?? (control ? `\\u${code.toString(16).padStart(4, '0')}` : c);
  }
  return `"${escaped}"`;
}

/**
 * The aktualizr-lite configuration lmp-el2go-auto-register wrote, with the same sections and
 * keys: the device gateway `https://<REPOID>.ota-lite.<domain>:8443`, its CA from root.crt,
 * and the client key and certificate on the PKCS#11 token at ids 01 / 03 (the gateway pair
 * 0x83000042 / 0x83000043), or 06 / 07 once a rotation moved it to the other slot. With the soft backend (no token) the key and certificate are
 * files instead: `pkey_source`/`cert_source` = "file" and `[import]` names the two files.
 */
export function renderSotaToml(
  settings: AgentSettings,
  soft?: SoftGatewayFiles,
  slot: GatewaySlot = PRIMARY_GATEWAY_SLOT,
): string {
  const server = `https://${settings.repoId}.ota-lite.${settings.domain}:8443`;
  const sota = settings.sotaDir.replace(/\/+$/, '');
  const source = soft ? 'file' : 'pkcs11';
  const lines = [
    '# Written by keyferry-agent auto-register; rewritten when the provisioning changes.',
    '[tls]',
    `server = ${str(server)}`,
    `ca_source = ${str('file')}`,
    `pkey_source = ${str(source)}`,
    `cert_source = ${str(source)}`,
    '',
    '[provision]',
    `server = ${str(server)}`,
    '',
    '[uptane]',
    `repo_server = ${str(`${server}/repo`)}`,
    `key_source = ${str('file')}`,
    '',
    '[pacman]',
    `type = ${str(settings.pacmanType)}`,
    `ostree_server = ${str(`https://${settings.repoId}.ostree.${settings.domain}:8443/ostree`)}`,
    `packages_file = ${str(settings.packagesFile)}`,
    `tags = ${str(settings.factoryTag)}`,
    `compose_apps_root = ${str(`${sota}/compose-apps`)}`,
    '',
    '[storage]',
    `type = ${str('sqlite')}`,
    `path = ${str(`${sota}/`)}`,
    '',
    '[import]',
    `tls_cacert_path = ${str(settings.rootCrt)}`,
  ];
  if (soft) {
    lines.push(`tls_pkey_path = ${str(soft.keyPath)}`, `tls_clientcert_path = ${str(soft.certificatePath)}`);
  } else {
    lines.push(
      '',
      '[p11]',
      `module = ${str(settings.pkcs11Module)}`,
      `pass = ${str(settings.pkcs11Pin)}`,
      `tls_pkey_id = ${str(pkcs11Hex(settings, slot.keyId))}`,
      `tls_clientcert_id = ${str(pkcs11Hex(settings, slot.certId))}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

function pkcs11Hex(settings: AgentSettings, objectId: number): string {
  return pkcs11IdFor(objectId, settings.genericKeypairs).toString('hex');
}

/**
 * Which gateway slot `$SOTA_DIR/sota.toml` names now (the primary one when the file is absent
 * or names neither): rotation reads it to know which slot is in use and which is free.
 */
export function activeGatewaySlot(settings: AgentSettings): GatewaySlot {
  let text: string;
  try {
    text = readFileSync(join(settings.sotaDir, 'sota.toml'), 'utf8');
  } catch {
    return PRIMARY_GATEWAY_SLOT;
  }
  const alt = ALTERNATE_GATEWAY_SLOT;
  const pkcs11 = new RegExp(`^tls_pkey_id = "${pkcs11Hex(settings, alt.keyId)}"$`, 'm');
  const file = new RegExp(`^tls_pkey_path = ".*/${seLabel(alt.keyId)}\\.key\\.pem"$`, 'm');
  return pkcs11.test(text) || file.test(text) ? alt : PRIMARY_GATEWAY_SLOT;
}

/**
 * Writes `$SOTA_DIR/sota.toml` atomically (0600: it holds the PIN) unless it already has
 * exactly this content. Returns what it did, for the log line.
 */
export function writeSotaToml(
  settings: AgentSettings,
  soft?: SoftGatewayFiles,
  slot: GatewaySlot = PRIMARY_GATEWAY_SLOT,
): 'written' | 'unchanged' {
  const path = join(settings.sotaDir, 'sota.toml');
  const text = renderSotaToml(settings, soft, slot);
  let current: string | undefined;
  try {
    current = readFileSync(path, 'utf8');
  } catch {
    current = undefined;
  }
  if (current === text) return 'unchanged';
  mkdirSync(settings.sotaDir, { recursive: true, mode: 0o755 });
  writeFileAtomic(path, text, 0o600);
  return 'written';
}
