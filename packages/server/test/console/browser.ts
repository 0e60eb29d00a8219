import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';

/** Debian's chromium (scripts/system-packages.sh installs it); Playwright never downloads one. */
export const CHROMIUM = '/usr/bin/chromium';
/** Where the browser tests leave their screenshots (gitignored). */
export const ARTIFACTS = join(import.meta.dirname, '../../../../test-artifacts/console');

/**
 * One headless chromium for a test file. Playwright starts it with a fresh temporary
 * --user-data-dir of its own, and each test opens its own context (its own cookie jar).
 */
export async function launchChromium(): Promise<Browser> {
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
