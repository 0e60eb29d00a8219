/// <reference lib="dom" />
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAX_ID_FILE_BYTES } from '@keyferry/core';
import { randomUid } from '@keyferry/sim';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiToken } from '../../src/tokens/api-tokens.ts';
import {
  type DeviceLinkFixture,
  provisionOverDeviceLink,
  SE050,
  startDeviceLinkFixture,
  type TestDevice,
} from '../devicelink/fixture.ts';
import { ARTIFACTS, launchChromium } from './browser.ts';

const STATES = [
  'GENERATION_FAILED',
  'PROVISIONING_FAILED',
  'GENERATION_ON_CONNECTION',
  'GENERATION_TRIGGERED',
  'GENERATION_COMPLETED',
  'PROVISIONING_COMPLETED',
];

let f: DeviceLinkFixture;
let browser: Browser;
let readToken: string;
let provisioned: TestDevice;
let reportCorrelationId: string;

const FAILURE = 'writing SE_83000043 failed: no space left in the secure element';

/** What keyferry-agent does over the device-link: manifest, enroll, report (success unless told). */
async function provision(device: TestDevice, failure?: string): Promise<string> {
  const report = await provisionOverDeviceLink(f.call, device, failure);
  return String(report.headers['x-correlation-id']);
}

async function signIn(context: BrowserContext, token: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${f.svc.url}/console/`);
  expect(new URL(page.url()).pathname).toBe('/console/sign-in');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${f.svc.url}/console/`);
  return page;
}

const hex = (d: TestDevice) => `0x${d.uid.hex}`;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** A device's one state as the API shows it: the least advanced object, failures first. */
async function apiState(id: string): Promise<string> {
  const res = await f.svc.call(
    'GET',
    `/ota/factories/demo/el2g-proxy/rtp/devices/${id}/secure-object-provisionings`,
  );
  const states = (res.json.content as Array<{ provisioningState: string }>).map((o) => o.provisioningState);
  if (states.every((s) => s === 'GENERATION_ON_CONNECTION')) return 'GENERATION_ON_CONNECTION';
  return STATES[Math.min(...states.map((s) => STATES.indexOf(s)))]!;
}

describe('the web console in chromium', () => {
  beforeAll(async () => {
    [f, browser] = await Promise.all([startDeviceLinkFixture('sqlite'), launchChromium()]);
    const db = f.svc.service.ctx.database.db;
    const factory = await db
      .selectFrom('factories')
      .select('id')
      .where('name', '=', 'demo')
      .executeTakeFirstOrThrow();
    readToken = (
      await createApiToken(db, { factoryId: factory.id, scopes: ['read'], description: 'console test' })
    ).token;
    provisioned = await f.device();
    reportCorrelationId = await provision(provisioned);
    await provision(await f.device(), FAILURE);
    const waiting = [0, 1, 2].map(() => randomUid().decimal);
    const added = await f.svc.call('POST', '/ota/factories/demo/el2g/devices/', {
      body: { 'product-id': SE050, devices: waiting },
    });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await f?.svc.stop();
  });

  it('shows a signed-out browser nothing but the sign-in page', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    for (const path of [
      '/console/',
      '/console/devices',
      `/console/devices/${hex(provisioned)}`,
      '/console/import',
    ]) {
      await page.goto(f.svc.url + path);
      expect(new URL(page.url()).pathname, path).toBe('/console/sign-in');
      const text = await page.content();
      expect(text).not.toContain(provisioned.uid.decimal);
      expect(text).not.toContain('demo');
    }
    for (const path of ['/console/events', '/console/import/00000000-0000-4000-8000-000000000000']) {
      const res = await page.request.get(f.svc.url + path);
      expect(res.status(), path).toBe(401);
      expect((await res.json()).code).toBe('unauthenticated');
    }
    const forged = await page.request.post(`${f.svc.url}/console/import?product=${SE050}`, {
      headers: { 'content-type': 'application/octet-stream', cookie: 'kf_console=made-up' },
      data: Buffer.from(`0x${randomUid().hex}\n`),
    });
    expect(forged.status()).toBe(401);
    await shot(page, 'sign-in');
    await context.close();
  });

  it('refuses a wrong token on the sign-in page, saying what to do', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${f.svc.url}/console/sign-in`);
    await page.getByLabel('API token').fill(`${f.svc.token.slice(0, -4)}AAAA`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('not valid: check it');
    expect(await context.cookies()).toEqual([]);
    await context.close();
  });

  it('signs in with a session cookie that holds nothing of the token; overview numbers match the API', async () => {
    const context = await browser.newContext();
    const urls: string[] = [];
    context.on('request', (r) => urls.push(r.url()));
    const page = await signIn(context, f.svc.token);
    const secret = f.svc.token.slice('kf_0123456789abcdef_'.length);
    const [cookie] = await context.cookies();
    expect(cookie).toMatchObject({
      name: 'kf_console',
      httpOnly: true,
      sameSite: 'Strict',
      path: '/console',
    });
    expect(cookie!.expires).toBeGreaterThan(Date.now() / 1000);
    expect(cookie!.value).not.toContain(secret.slice(0, 8));
    expect(urls.filter((u) => u.includes(secret.slice(0, 8)))).toEqual([]);
    expect(await page.evaluate(() => document.cookie)).toBe('');

    const plan = (await f.svc.call('GET', '/ota/factories/demo/el2g/plan/')).json;
    expect(await page.locator('[data-field="devices-used"]').textContent()).toBe(String(plan.devices.used));
    expect(await page.locator('[data-field="devices-max"]').textContent()).toBe(String(plan.devices.max));
    const daysLeft = Math.ceil((Date.parse(plan.evaluationEndsAt) - Date.now()) / 86_400_000);
    expect(await page.locator('[data-field="evaluation-days-left"]').textContent()).toBe(String(daysLeft));

    const listed = (await f.svc.call('GET', '/ota/factories/demo/el2g/devices/')).json as Array<{
      id: string;
    }>;
    expect(await page.locator('[data-field="devices-total"]').textContent()).toBe(String(listed.length));
    const expected = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const d of listed) expected[await apiState(d.id)]! += 1;
    expect(expected.PROVISIONING_COMPLETED).toBe(1);
    expect(expected.PROVISIONING_FAILED).toBe(1);
    for (const s of STATES) {
      expect(await page.locator(`[data-state="${s}"]`).textContent(), s).toBe(String(expected[s]));
    }

    const cas = (await f.svc.call('GET', '/ota/factories/demo/el2g/intermediate-cas/')).json as Array<{
      name: string;
      value: string;
    }>;
    const expiry = new Date(new X509Certificate(cas[0]!.value).validTo)
      .toISOString()
      .slice(0, 19)
      .replace('T', ' ');
    await expect
      .poll(() => page.getByRole('region', { name: 'Intermediate CAs' }).textContent())
      .toContain(expiry);
    expect(await page.locator('[data-field="rate-total"]').textContent()).toBe('1');
    const failures = page.getByRole('region', { name: 'Latest failures' });
    expect(await failures.textContent()).toContain(`fio-device-gateway-caPROVISIONING_FAILED${FAILURE}`);

    // live: a second device provisions while the page is open; the counts follow without a reload
    await expect
      .poll(() => page.locator('[data-field="live-status"]').textContent())
      .toContain('Live: updated');
    const second = await f.device();
    await provision(second);
    await expect
      .poll(() => page.locator('[data-state="PROVISIONING_COMPLETED"]').textContent(), { timeout: 15_000 })
      .toBe('2');
    await expect.poll(() => page.locator('[data-field="rate-total"]').textContent()).toBe('2');
    await shot(page, 'overview');
    await page.setViewportSize({ width: 820, height: 1180 }); // a tablet held upright
    await shot(page, 'overview-tablet');
    await context.close();
  });

  it('says when live figures could not be read, and when live updates stopped for good', async () => {
    const context = await browser.newContext();
    // every text the live status shows, in order (a later one replaces an earlier one on the page)
    await context.addInitScript(() => {
      const seen: string[] = [];
      (window as unknown as { liveStatuses: string[] }).liveStatuses = seen;
      document.addEventListener('DOMContentLoaded', () => {
        const field = document.querySelector('[data-field="live-status"]');
        if (!field) return;
        new MutationObserver(() => seen.push(field.textContent ?? '')).observe(field, {
          childList: true,
          characterData: true,
          subtree: true,
        });
      });
    });
    const page = await signIn(context, readToken);
    const statuses = () =>
      page.evaluate(() => (window as unknown as { liveStatuses: string[] }).liveStatuses);
    await expect.poll(statuses, { timeout: 30_000 }).toContainEqual(expect.stringContaining('Live: updated'));
    // the server's `failed` event (its read of the figures failed), then the stream ends and the
    // browser reconnects to a session that was signed out: 401, after which it stops
    let opened = 0;
    await page.route('**/console/events', async (route) => {
      opened++;
      if (opened === 1) {
        await route.fulfill({
          status: 200,
          headers: { 'content-type': 'text/event-stream' },
          body: 'retry: 100\n\nevent: failed\ndata: {}\n\n',
        });
      } else await route.continue();
    });
    await page.reload();
    const csrf = (await page.locator('meta[name="csrf-token"]').getAttribute('content'))!;
    await expect
      .poll(statuses, { timeout: 30_000 })
      .toContainEqual('Live figures could not be read just now (keyferryd logged why): trying again.');
    await context.request.post(`${f.svc.url}/console/sign-out`, {
      headers: { 'x-csrf-token': csrf, origin: f.svc.url },
      maxRedirects: 0,
    });
    await expect
      .poll(() => page.locator('[data-field="live-status"]').textContent(), { timeout: 30_000 })
      .toBe('Live updates stopped: reload the page (sign in again if your session ended).');
    expect(opened).toBeGreaterThanOrEqual(2);
    await context.close();
  });

  it('finds a device by either id form and shows its PROVISIONING_COMPLETED timeline', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, readToken);
    await page.getByRole('link', { name: 'Devices' }).click();
    for (const [form, other] of [
      [hex(provisioned), provisioned.uid.decimal],
      [provisioned.uid.decimal, hex(provisioned)],
    ] as const) {
      await page.getByLabel('Device id').fill(form);
      await page.getByRole('button', { name: 'Search' }).click();
      const rows = page.locator('table.devices tbody tr');
      await expect.poll(() => rows.count()).toBe(1);
      expect(await rows.first().textContent()).toContain(other);
      expect(await rows.first().textContent()).toContain('PROVISIONING_COMPLETED');
    }
    await page.getByLabel('Device id').fill('0x12');
    await page.getByRole('button', { name: 'Search' }).click();
    expect(await page.getByRole('alert').textContent()).toContain(
      'is not a device id: search with 0x followed by 36 hex digits',
    );

    await page.goto(`${f.svc.url}/console/devices?state=GENERATION_ON_CONNECTION`);
    expect(await page.locator('table.devices tbody tr').count()).toBe(3);
    await shot(page, 'devices');

    await page.goto(`${f.svc.url}/console/devices?q=${hex(provisioned)}`);
    await page.getByRole('link', { name: hex(provisioned) }).click();
    await page.waitForURL(`**/console/devices/${provisioned.uid.decimal}`);
    const timeline = page.getByRole('region', { name: 'Timeline' });
    const report = timeline.locator('li', { hasText: 'device-link.report' });
    expect(await report.textContent()).toContain('fio-device-gateway-ca: PROVISIONING_COMPLETED');
    expect(await report.textContent()).toContain(reportCorrelationId);
    expect(await timeline.textContent()).toContain('device-link.enroll');
    expect(await page.locator('[data-object-state="fio-device-gateway-ca"]').textContent()).toBe(
      'PROVISIONING_COMPLETED',
    );
    const certs = page.getByRole('region', { name: 'Certificates' });
    const serial = await f.svc.service.ctx.database.db
      .selectFrom('certificates')
      .innerJoin('devices', 'devices.id', 'certificates.device_row_id')
      .select('serial_hex')
      .where('devices.device_id', '=', provisioned.uid.decimal)
      .executeTakeFirstOrThrow();
    expect(await certs.textContent()).toContain(serial.serial_hex);
    await shot(page, 'device');
    await context.close();
  });

  it('imports an id file with progress and the summary the CLI prints', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, f.svc.token);
    await page.getByRole('link', { name: 'Allow-list import' }).click();
    const fresh = Array.from({ length: 2_500 }, () => randomUid());
    const lines = [
      'id,site',
      `0x${fresh[0]!.hex},a`,
      `${provisioned.uid.decimal},b`,
      'not-an-id,c',
      `0x${fresh[1]!.hex},d`,
      `${fresh[0]!.decimal},e`,
      ...fresh.slice(2).map((u) => `${u.decimal},f`),
    ];
    const file = join(ARTIFACTS, 'import.csv');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const before = (await f.svc.call('GET', '/ota/factories/demo/el2g/devices/')).json.length;
    await page.getByLabel('Id file or CSV').setInputFiles(file);
    await page.getByRole('button', { name: 'Import' }).click();
    const summary = page.locator('#import-summary');
    await expect.poll(() => summary.textContent(), { timeout: 60_000 }).toContain('Added:');
    const progress = page.locator('#import-progress');
    expect(await progress.isVisible()).toBe(true);
    expect(await progress.getAttribute('max')).toBe('2501');
    expect(await progress.evaluate((p: HTMLProgressElement) => p.value)).toBe(2501);
    expect(await page.getByRole('status').textContent()).toBe('2501 of 2501 ids processed (done)');
    const text = await summary.textContent();
    expect(text).toContain('Added: 2500');
    expect(text).toContain('Already present: 1');
    expect(text).toContain('Duplicates in file: 1 (line 6 repeats line 2)');
    expect(text).toContain('Invalid: 1 (line 4)');
    expect(text).toContain('Refused: 0');
    expect((await f.svc.call('GET', '/ota/factories/demo/el2g/devices/?limit=10000')).json.length).toBe(
      before + 2500,
    );
    await shot(page, 'import');
    await context.close();
  }, 90_000);

  it('says an accepted import goes on when its progress cannot be followed (signed out after the upload)', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, f.svc.token);
    await page.goto(`${f.svc.url}/console/import`);
    const csrf = (await page.locator('meta[name="csrf-token"]').getAttribute('content'))!;
    const cookie = (await context.cookies())[0]!;
    // the first progress poll finds the session signed out (another tab, or a restart)
    let polls = 0;
    await page.route('**/console/import/*', async (route) => {
      if (polls++ === 0) {
        const out = await fetch(`${f.svc.url}/console/sign-out`, {
          method: 'POST',
          redirect: 'manual',
          headers: {
            cookie: `kf_console=${cookie.value}`,
            origin: f.svc.url,
            'content-type': 'application/x-www-form-urlencoded',
          },
          body: new URLSearchParams({ csrf }).toString(),
        });
        expect(out.status).toBe(303);
      }
      await route.continue();
    });
    const fresh = Array.from({ length: 300 }, () => randomUid());
    const before = (await f.svc.call('GET', '/ota/factories/demo/el2g/devices/?limit=10000')).json.length;
    await page.getByLabel('Id file or CSV').setInputFiles({
      name: 'after-sign-out.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from(`${fresh.map((u) => `0x${u.hex}`).join('\n')}\n`),
    });
    await page.getByRole('button', { name: 'Import' }).click();
    const alert = page.getByRole('alert');
    await expect.poll(() => alert.textContent(), { timeout: 30_000 }).toContain('Import accepted');
    const text = (await alert.textContent())!;
    expect(text).toContain('it continues on the server, but its progress is unavailable (not signed in');
    expect(text).toContain('sign in again');
    expect(text).not.toContain('refused');
    expect(await page.getByRole('status').textContent()).toContain('Accepted; progress unavailable');
    // and the job did run to its end
    await expect
      .poll(
        async () => (await f.svc.call('GET', '/ota/factories/demo/el2g/devices/?limit=10000')).json.length,
        { timeout: 60_000 },
      )
      .toBe(before + 300);
    await context.close();
  }, 90_000);

  it('refuses a file over the import limit in the page, without uploading it', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, f.svc.token);
    await page.goto(`${f.svc.url}/console/import`);
    const form = page.locator('#import-form');
    expect(await form.getAttribute('data-max-bytes')).toBe(String(MAX_ID_FILE_BYTES));
    // a small stand-in for the limit: the page checks file.size against whatever it says
    await form.evaluate((el: HTMLFormElement) => {
      el.dataset.maxBytes = '64';
    });
    const posts: string[] = [];
    context.on('request', (r) => {
      if (r.method() === 'POST') posts.push(r.url());
    });
    const body = Buffer.from(`${[0, 1, 2].map(() => `0x${randomUid().hex}`).join('\n')}\n`);
    await page
      .getByLabel('Id file or CSV')
      .setInputFiles({ name: 'big.txt', mimeType: 'text/plain', buffer: body });
    await page.getByRole('button', { name: 'Import' }).click();
    await expect
      .poll(() => page.getByRole('alert').textContent())
      .toContain(`big.txt has ${body.length} bytes; one import takes at most 64 bytes: split it`);
    expect(await page.getByRole('status').textContent()).toBe('Not imported.');
    expect(posts).toEqual([]);
    await context.close();
  });

  it('does not let a read token import, in the page or by a direct request', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, readToken);
    await page.goto(`${f.svc.url}/console/import`);
    expect(await page.getByRole('alert').textContent()).toContain('read scope only');
    expect(await page.locator('#import-form').count()).toBe(0);
    const before = (await f.svc.call('GET', '/ota/factories/demo/el2g/plan/')).json.devices.used;
    const answer = await page.evaluate(async (id) => {
      const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')!.content;
      const res = await fetch('/console/import?product=935389312472', {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', 'x-csrf-token': csrf },
        body: `${id}\n`,
      });
      return { status: res.status, body: (await res.json()) as { detail: string } };
    }, `0x${randomUid().hex}`);
    expect(answer.status).toBe(403);
    expect(answer.body.detail).toContain('lacks the "write" scope');
    expect((await f.svc.call('GET', '/ota/factories/demo/el2g/plan/')).json.devices.used).toBe(before);
    await context.close();
  });

  it('refuses a change without the page CSRF token or from another origin', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, f.svc.token);
    const cookie = (await context.cookies())[0]!;
    const csrf = await page.locator('meta[name="csrf-token"]').getAttribute('content');
    const send = (headers: Record<string, string>) =>
      fetch(`${f.svc.url}/console/import?product=${SE050}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/octet-stream',
          cookie: `kf_console=${cookie.value}`,
          ...headers,
        },
        body: `0x${randomUid().hex}\n`,
      });
    const missing = await send({});
    expect(missing.status).toBe(403);
    expect(((await missing.json()) as { detail: string }).detail).toContain('CSRF token missing or wrong');
    const foreign = await send({ 'x-csrf-token': csrf!, origin: 'http://evil.example' });
    expect(foreign.status).toBe(403);
    expect(((await foreign.json()) as { detail: string }).detail).toContain('came from another site');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL('**/console/sign-in');
    const after = await send({ 'x-csrf-token': csrf! });
    expect(after.status).toBe(401);
    await context.close();
  });
});
