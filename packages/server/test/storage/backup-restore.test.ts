import { copyFileSync, cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceLinkCall } from '../../../../test/support/device-link.ts';
import { PROCESS_TEST_TIMEOUT_MS, runBinAsync } from '../../../../test/support/processes.ts';
import { validateConfig } from '../../src/config/load.ts';
import { type RunningService, startService } from '../../src/service.ts';
import {
  type DeviceLinkFixture,
  provisionOverDeviceLink,
  startDeviceLinkFixture,
  type TestDevice,
} from '../devicelink/fixture.ts';

/** What a backup is made of: the database copy, and apart from it the master key. */
interface Backup {
  database: string;
  masterKey: string;
  /** keyferryd's own device-link TLS files (service CA), which devices trust. */
  serviceFiles: string;
}

describe('backup with keyferryd admin backup, restore into a fresh node', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let f: DeviceLinkFixture;
  let work: string;
  let restored: RunningService | undefined;
  let first: TestDevice;
  let firstSerial: string;
  let backup: Backup;

  const provision = (call: DeviceLinkFixture['call'], device: TestDevice) =>
    provisionOverDeviceLink(call, device);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-backup-'));
    f = await startDeviceLinkFixture('sqlite');
    first = await f.device();
    await provision(f.call, first);
    const manifest = await f.call(first, { path: '/device-link/v1/manifest' });
    firstSerial = manifest.json.objects[1].certificateSerial;
    expect(firstSerial).toMatch(/^[0-9a-f]+$/);
    // the real command, while the service runs
    const file = join(work, 'keyferry-backup.db');
    const res = await runBinAsync('keyferryd', ['admin', 'backup', file], {
      env: { KEYFERRY_DATA_DIR: f.svc.dataDir },
    });
    expect(res.stderr).toContain('The master key is not in it');
    expect(res.stdout).toBe(`Backed up the database to ${file}\n`);
    const again = await runBinAsync('keyferryd', ['admin', 'backup', file], {
      env: { KEYFERRY_DATA_DIR: f.svc.dataDir },
    });
    expect(again.status).toBe(2);
    expect(again.stderr).toContain(`${file} exists already: name a new file, a backup never overwrites`);
    const keyStore = join(work, 'key-store');
    const serviceFiles = join(work, 'service-files');
    cpSync(join(f.svc.dataDir, 'master.key'), join(keyStore, 'master.key'));
    for (const name of readdirSync(f.svc.dataDir)) {
      if (/^(service-ca|device-link-tls)\./.test(name) || name === 'sim') {
        cpSync(join(f.svc.dataDir, name), join(serviceFiles, name), { recursive: true });
      }
    }
    backup = { database: file, masterKey: join(keyStore, 'master.key'), serviceFiles };
    await f.svc.service.close(); // the old node is gone; its data dir with it below
    rmSync(f.svc.dataDir, { recursive: true, force: true });
  });
  afterAll(async () => {
    await restored?.close();
    rmSync(work, { recursive: true, force: true });
    if (f) rmSync(f.work, { recursive: true, force: true });
  });

  function restore(dataDir: string, masterKey: string) {
    cpSync(backup.serviceFiles, dataDir, { recursive: true });
    copyFileSync(backup.database, join(dataDir, 'keyferry.db'));
    const config = validateConfig({
      dataDir,
      api: { listen: '127.0.0.1:0' },
      deviceLink: { listen: '127.0.0.1:0' },
      gateway: { listen: '127.0.0.1:0' },
      keyCustody: { kind: 'soft', masterKeyFile: masterKey },
      log: { level: 'silent' },
    });
    return startService({ config, embeddedDefaults: true });
  }

  it('refuses to start with a master key that does not open the stored keys', async () => {
    const wrongKey = join(work, 'wrong.key');
    writeFileSync(wrongKey, `${'ab'.repeat(32)}\n`, { mode: 0o600 });
    await expect(restore(join(work, 'node-wrong'), wrongKey)).rejects.toThrow(/master key/);
  });

  it('the restored node knows the provisioned device and provisions a new one', async () => {
    restored = await restore(join(work, 'node-2'), backup.masterKey);
    expect(restored.demo).toBeUndefined(); // the factory came back, no second demo factory
    const factory = await restored.ctx.database.db
      .selectFrom('factories')
      .selectAll()
      .executeTakeFirstOrThrow();
    const serviceCa = (await import('node:fs')).readFileSync(
      join(restored.ctx.config.dataDir, 'service-ca.pem'),
      'utf8',
    );
    expect(serviceCa).toBe(f.serviceCa); // devices keep trusting the device-link
    const call: DeviceLinkFixture['call'] = (device, options) =>
      deviceLinkCall({
        address: restored!.addresses.deviceLink!,
        ca: serviceCa,
        servername: `${factory.subdomain}.device-link.localhost`,
        ...(device ? { key: device.key, cert: device.cert } : {}),
        ...options,
      });
    const manifest = await call(first, { path: '/device-link/v1/manifest' });
    expect(manifest.json.objects.map((o: { state: string }) => o.state)).toEqual([
      'PROVISIONING_COMPLETED',
      'PROVISIONING_COMPLETED',
    ]);
    expect(manifest.json.objects[1].certificateSerial).toBe(firstSerial);
    // a device allow-listed after the restore: its certificate is signed with the restored CA key
    const second = await f.device({ allowList: false });
    const { allowListDevice } = await import('../../../../test/support/device-link.ts');
    await allowListDevice(restored.ctx.database.db, 'demo', second.uid.decimal, '935389312472');
    await provision(call, second);
  });
});
