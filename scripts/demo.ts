import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runWalkthrough } from './walkthrough.ts';

/**
 * `npm run demo`: the walkthrough (docs/walkthrough.md) against a local keyferryd with three
 * simulated SE05x devices, in a scratch HOME that is removed afterwards. keyferryd listens on
 * free ports, so it never collides with one started by `npm start`.
 */
const DEVICES = 3;
const needed = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/bin/curl', '/usr/bin/openssl'];
const missing = needed.filter((f) => !existsSync(f));
if (missing.length > 0) {
  process.stderr.write(
    `ERROR: the demo's simulated devices need SoftHSM2, the OpenSSL PKCS#11 engine, curl and openssl (${missing.join(', ')} missing).\n` +
      'Install them with: sudo apt-get install -y softhsm2 libengine-pkcs11-openssl curl openssl   (npm test installs them when run as root)\n',
  );
  process.exit(1);
}
const home = mkdtempSync(join(tmpdir(), 'keyferry-demo-'));
process.stdout.write(
  `keyferry demo: the EdgeLock 2GO walkthrough (docs/walkthrough.md) with ${DEVICES} simulated SE05x devices on SoftHSM2 tokens, in ${home}\n`,
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
const { status } = await runWalkthrough({ devices: DEVICES, env, onOutput: (t) => process.stdout.write(t) });
// the walkthrough stops keyferryd at its end; make sure nothing outlives a failed run
try {
  execFileSync('pkill', ['-f', `${home}`], { stdio: 'ignore' });
} catch {}
rmSync(home, { recursive: true, force: true });
process.stdout.write(
  status === 0 ? '\nDemo complete; scratch directory removed.\n' : `\nDemo FAILED (exit ${status}).\n`,
);
process.exit(status);
