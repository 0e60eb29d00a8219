// `node bench/lib/run-from-source.mjs packages/<pkg>/src/main.ts ARGS…`: runs a program from its
// TypeScript source through tsx, as the bins did before `npm run build` (bench/startup.ts compares).
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { register } from 'tsx/esm/api';

register();
const entry = resolve(process.argv[2] ?? '');
process.argv.splice(1, 2, entry); // the program sees argv as if it had been started directly
const { main } = await import(pathToFileURL(entry).href);
const code = await main(process.argv);
if (typeof code === 'number') process.exitCode = code;
