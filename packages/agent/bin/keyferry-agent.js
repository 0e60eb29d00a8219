#!/usr/bin/env -S node --
// Runs keyferry-agent from its TypeScript source (no build step): tsx compiles on the fly.
// `node --` keeps Node 20 from claiming `--env-file` (its own flag, even after the script).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv);
