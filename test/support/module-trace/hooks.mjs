// Module hooks (they run on Node's loader thread): appends each module URL that the program
// resolves to the file named by KEYFERRY_MODULE_TRACE, one per line, so a test can tell what a
// program loaded (built JavaScript or TypeScript source, mqtt or not) without timing anything.
import { appendFileSync } from 'node:fs';

const trace = process.env.KEYFERRY_MODULE_TRACE;

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (trace) appendFileSync(trace, `${resolved.url}\n`);
  return resolved;
}
