#!/usr/bin/env -S node --
// Runs keyferry-agent's built JavaScript, packages/agent/dist (`npm run build`; `npm ci` runs it).
// `node --` keeps Node 20 from claiming `--env-file` (its own flag, even after the script).
import { existsSync } from 'node:fs';

const built = new URL('../dist/main.js', import.meta.url);
if (!existsSync(built)) {
  process.stderr.write(
    'ERROR: keyferry-agent is not built (no packages/agent/dist/main.js): run `npm run build`\n',
  );
  process.exit(1);
}
const { main } = await import(built.href);
process.exitCode = await main(process.argv);
