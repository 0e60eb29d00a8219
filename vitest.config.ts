import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    // Limits that only catch a hang. Tests that run programs set their own (test/support/processes.ts);
    // hooks start keyferryd and databases, which on a busy 2-core machine can take a minute.
    testTimeout: 60_000,
    hookTimeout: 300_000,
    reporters: ['default'],
  },
});
