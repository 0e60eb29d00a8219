// npm's `prepare` (run by `npm ci` / `npm install` in the checkout): builds the programs.
// With `npm ci --omit=dev` (a deployment that ships packages/*/dist built elsewhere) the build
// tools are not installed, so it says so and leaves dist/ as it is.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
try {
  require.resolve('esbuild');
  require.resolve('tsx/package.json');
} catch {
  process.stdout.write(
    'keyferry: build tools not installed (npm ci --omit=dev?): packages/*/dist left as it is\n',
  );
  process.exit(0);
}
const run = spawnSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
process.exit(run.status ?? 1);
