#!/usr/bin/env node
// Runs keyferryd from its TypeScript source (no build step): tsx compiles on the fly.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/main.ts');
await main(process.argv);
