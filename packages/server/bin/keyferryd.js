#!/usr/bin/env node
// Runs keyferryd's built JavaScript, packages/server/dist (`npm run build`; `npm ci` runs it).
import { existsSync } from 'node:fs';

const built = new URL('../dist/main.js', import.meta.url);
if (!existsSync(built)) {
  process.stderr.write(
    'ERROR: keyferryd is not built (no packages/server/dist/main.js): run `npm run build`\n',
  );
  process.exit(1);
}
const { main } = await import(built.href);
await main(process.argv);
