#!/usr/bin/env node
// Runs keyferry's built JavaScript, packages/cli/dist (`npm run build`; `npm ci` runs it).
import { existsSync } from 'node:fs';

const built = new URL('../dist/main.js', import.meta.url);
if (!existsSync(built)) {
  process.stderr.write('ERROR: keyferry is not built (no packages/cli/dist/main.js): run `npm run build`\n');
  process.exit(1);
}
const { main } = await import(built.href);
process.exitCode = await main(process.argv);
