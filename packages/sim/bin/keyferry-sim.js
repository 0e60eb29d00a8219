#!/usr/bin/env node
// Runs keyferry-sim from its TypeScript source (no build step): tsx compiles on the fly.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv);
