// `node --import bench/lib/max-rss.mjs …`: at exit, writes the process's peak resident set size
// (KiB, getrusage) to the file KEYFERRY_BENCH_RSS_FILE names, for bench/startup.ts.
import { writeFileSync } from 'node:fs';

const file = process.env.KEYFERRY_BENCH_RSS_FILE;
if (file) process.on('exit', () => writeFileSync(file, String(process.resourceUsage().maxRSS)));
