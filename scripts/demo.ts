import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOpensslPkcs11Engine } from '@keyferry/pkcs11';
import { runWalkthrough, type Variant } from './walkthrough.ts';

/**
 * `npm run demo`: the walkthrough (docs/walkthrough.md) against a local keyferryd with three
 * simulated SE05x devices, in a scratch HOME that is removed afterwards. keyferryd listens on
 * free ports, so it never collides with one started by `npm start`.
 */
const DEVICES = 3;
const missingTools = ['/usr/bin/curl', '/usr/bin/openssl'].filter((f) => !existsSync(f));
if (missingTools.length > 0) {
  process.stderr.write(
    `ERROR: the demo needs curl and openssl (${missingTools.join(', ')} missing): sudo apt-get install -y curl openssl\n`,
  );
  process.exit(1);
}
const variant: Variant = process.env.KEYFERRY_DEMO_SE === 'soft' || !softhsmAvailable() ? 'soft' : 'pkcs11';
const home = mkdtempSync(join(tmpdir(), 'keyferry-demo-'));
process.stdout.write(
  `keyferry demo: the EdgeLock 2GO walkthrough (docs/walkthrough.md) with ${DEVICES} simulated SE05x devices, in ${home}\n` +
    (variant === 'pkcs11'
      ? 'Secure elements: SoftHSM2 tokens (keys generated on the token, used through PKCS#11 and the OpenSSL engine)\n'
      : 'Secure elements: soft (directories), because softhsm2 or libengine-pkcs11-openssl is not installed (or KEYFERRY_DEMO_SE=soft)\n'),
);
const env: NodeJS.ProcessEnv = {
  ...process.env,
  HOME: home,
  KEYFERRY_API_LISTEN: '127.0.0.1:0',
  KEYFERRY_DEVICE_LINK_LISTEN: '127.0.0.1:0',
  KEYFERRY_GATEWAY_LISTEN: '127.0.0.1:0',
  KEYFERRY_LOG_LEVEL: 'warn',
};
delete env.KEYFERRY_SERVER;
delete env.KEYFERRY_TOKEN;
delete env.KEYFERRY_FACTORY;
delete env.KEYFERRY_DATA_DIR;
const { status } = await runWalkthrough({
  devices: DEVICES,
  variant,
  env,
  onOutput: (t) => process.stdout.write(t),
});
// the walkthrough stops keyferryd at its end; make sure nothing outlives a failed run
try {
  execFileSync('pkill', ['-f', `${home}`], { stdio: 'ignore' });
} catch {}
rmSync(home, { recursive: true, force: true });
process.stdout.write(
  status === 0 ? '\nDemo complete; scratch directory removed.\n' : `\nDemo FAILED (exit ${status}).\n`,
);
process.exit(status);

function softhsmAvailable(): boolean {
  if (!existsSync('/usr/lib/softhsm/libsofthsm2.so') || !existsSync('/usr/bin/softhsm2-util')) return false;
  try {
    findOpensslPkcs11Engine();
    return true;
  } catch {
    return false;
  }
}
