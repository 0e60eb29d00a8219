import { createRequire } from 'node:module';

/**
 * pkcs11js is CommonJS and builds its exports with an object spread, which Node's ESM loader
 * cannot see through: `import pkcs11js from 'pkcs11js'` fails to type-check and
 * `import * as` yields no constants at run time. Requiring it is the one form that works in
 * both tsc and Node.
 */
const require = createRequire(import.meta.url);

export const p11 = require('pkcs11js') as typeof import('pkcs11js');

export type { Handle, PKCS11, Template } from 'pkcs11js';
