import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  AgentError,
  type AgentSettings,
  agentSettings,
  type Log,
  openSecureElement,
  registerOnce,
  renewOnce,
  type SecureElement,
  type SettingSource,
} from '@keyferry/agent';
import { createSecureElement } from '../se05x/create.ts';
import { SE_LAYOUT } from '../se05x/layout.ts';
import type { VendorCa } from '../se05x/vendor-ca.ts';
import { ALLOWLIST_BATCH, type ManagementApi } from './management-api.ts';
import { type DeviceFailure, type FleetSummary, summarize } from './stats.ts';

/** What the fleet needs to know about the service, read once before the first device. */
export interface FleetTarget {
  readonly api: ManagementApi;
  readonly product: string;
  readonly repoId: string;
  readonly subdomain: string;
  /** `host:port` of the device-link listener. */
  readonly deviceLink: string;
  readonly deviceLinkCa: string;
  readonly rootCrt: string;
}

/** How often and for how long a device retries transient failures (5xx, 429, network), 1–10 s apart. */
interface RetryBound {
  readonly attempts: number;
  readonly forMs: number;
}

/**
 * Auto-register retries as the agent's service loop would: long enough to outlast a
 * keyferryd restart, so a restart costs retries, not devices.
 */
const REGISTER_RETRIES: RetryBound = { attempts: Number.POSITIVE_INFINITY, forMs: 120_000 };

/**
 * A renewal pass tries each device at most three times (a transient failure retried twice):
 * its devices are provisioned already and can renew on the next pass, so a pass over a fleet
 * whose device-link is down ends in seconds per device, not minutes.
 */
export const RENEW_ATTEMPTS = 3;
const RENEW_RETRIES: RetryBound = { attempts: RENEW_ATTEMPTS, forMs: 120_000 };
const silent: Log = { info: () => {}, warn: () => {} };

interface Device {
  readonly uid: string;
  readonly home: string;
}

/** The agent's settings for one device: the soft backend in `<home>/se`, sota.toml in `<home>/sota`. */
function deviceSettings(target: FleetTarget, home: string): AgentSettings {
  const values: Record<string, string> = {
    REPOID: target.repoId,
    EL2GO_HOSTNAME: target.subdomain,
    EL2GO_CONNECT_ADDR: target.deviceLink,
    DEVICE_LINK_CA: target.deviceLinkCa,
    SE_BACKEND: 'soft',
    SE_DIR: join(home, 'se'),
    SOTA_DIR: join(home, 'sota'),
    ROOT_CRT: target.rootCrt,
    AKLITE_START_CMD: 'true',
  };
  const source: SettingSource = { envFile: 'keyferry-sim fleet', get: (name) => values[name] };
  return agentSettings(source);
}

/** One device's auto-register run (the agent's registerOnce), milliseconds it took. */
function register(target: FleetTarget, device: Device): Promise<number> {
  return withRetries(target, device, REGISTER_RETRIES, async (settings, se) => {
    await registerOnce({ settings, se, log: silent });
  });
}

/** `run` for one device with its settings and secure element, transient failures retried within `bound`; milliseconds it took. */
async function withRetries(
  target: FleetTarget,
  device: Device,
  bound: RetryBound,
  run: (settings: AgentSettings, se: SecureElement) => Promise<void>,
): Promise<number> {
  const settings = deviceSettings(target, device.home);
  mkdirSync(settings.sotaDir, { recursive: true });
  const se = openSecureElement(settings);
  const started = performance.now();
  const deadline = Date.now() + bound.forMs;
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        await run(settings, se);
        return performance.now() - started;
      } catch (error) {
        const wait = Math.min(Math.max(1, (error as AgentError).retryAfter ?? 1), 10) * 1000;
        const retry = attempt < bound.attempts && Date.now() + wait <= deadline;
        if (!(error instanceof AgentError) || !error.transient || !retry) throw error;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  } finally {
    se.close();
  }
}

/**
 * A fleet run that could not go on (a batch that could not be made or allow-listed): its
 * message says why, `summary` counts what the devices before it did (their registrations finished).
 */
export class FleetStopped extends Error {
  readonly summary: FleetSummary;
  constructor(message: string, summary: FleetSummary) {
    super(message);
    this.summary = summary;
  }
}

/**
 * Creates `count` soft secure elements under `dir`, allow-lists them `batchSize`
 * (`ALLOWLIST_BATCH`) at a time and runs auto-register for each with at most `concurrency` in
 * flight; a batch is made and allow-listed while the previous one registers. A batch that
 * cannot be made or allow-listed stops the run: FleetStopped, once the registrations in flight end.
 */
export async function runFleet(options: {
  readonly target: FleetTarget;
  readonly vendor: VendorCa;
  readonly count: number;
  readonly dir: string;
  readonly concurrency: number;
  readonly batchSize?: number;
  readonly progress?: (done: number) => void;
}): Promise<FleetSummary> {
  const { target, count, dir, concurrency } = options;
  const batchSize = options.batchSize ?? ALLOWLIST_BATCH;
  const started = performance.now();
  const latencies: number[] = [];
  const failures: DeviceFailure[] = [];
  const inFlight = new Set<Promise<void>>();
  const width = String(count).length;
  const summary = () =>
    summarize({
      devices: count,
      latencies,
      failures,
      seconds: (performance.now() - started) / 1000,
      dir,
    });
  try {
    await startBatches();
  } catch (error) {
    await Promise.all(inFlight);
    throw new FleetStopped(error instanceof Error ? error.message : String(error), summary());
  }
  await Promise.all(inFlight);
  return summary();

  async function startBatches(): Promise<void> {
    for (let first = 0; first < count; first += batchSize) {
      const batch: Device[] = [];
      for (let i = first; i < Math.min(count, first + batchSize); i++) {
        const home = join(dir, `device-${String(i + 1).padStart(width, '0')}`);
        const made = await createSecureElement({
          vendor: options.vendor,
          product: target.product,
          backend: { kind: 'dir', dir: join(home, 'se') },
        });
        batch.push({ uid: `0x${made.uid.hex}`, home });
      }
      const results = await target.api.allowList(
        target.product,
        batch.map((d) => d.uid),
      );
      for (const [index, device] of batch.entries()) {
        const result = results[index];
        if (result?.status !== 'added' && result?.status !== 'already-present') {
          const why = result?.reason ?? (result?.group ? `in group ${result.group}` : 'no answer');
          failures.push({ uid: device.uid, reason: `not allow-listed: ${result?.status ?? '?'} (${why})` });
          continue;
        }
        while (inFlight.size >= concurrency) await Promise.race(inFlight);
        const task: Promise<void> = register(target, device).then(
          (ms) => {
            latencies.push(ms);
          },
          (error: unknown) => {
            failures.push({
              uid: device.uid,
              reason: error instanceof Error ? error.message : String(error),
            });
          },
        );
        const tracked = task.finally(() => {
          inFlight.delete(tracked);
          options.progress?.(latencies.length + failures.length);
        });
        inFlight.add(tracked);
      }
    }
  }
}

/**
 * A rotation pass over a fleet `runFleet` made under `dir`: the agent's renew (renewOnce) for
 * every device, at most `concurrency` in flight. A device rotates its gateway key into the
 * other slot when its manifest says `rotate`, its certificate is inside the renewal window, or
 * with `force`; `rotated` counts those that did.
 */
export async function runRenewal(options: {
  readonly target: FleetTarget;
  readonly dir: string;
  readonly concurrency: number;
  readonly force?: boolean;
}): Promise<FleetSummary & { readonly rotated: number }> {
  const { target, dir } = options;
  const started = performance.now();
  const latencies: number[] = [];
  const failures: DeviceFailure[] = [];
  let rotated = 0;
  const homes = fleetHomes(dir);
  let next = 0;
  const worker = async () => {
    while (next < homes.length) {
      const home = homes[next++] as string;
      const device = { uid: deviceUid(home), home };
      try {
        latencies.push(
          await withRetries(target, device, RENEW_RETRIES, async (settings, se) => {
            const summary = await renewOnce({ settings, se, log: silent, force: options.force === true });
            if (summary.rotated) rotated++;
          }),
        );
      } catch (error) {
        failures.push({ uid: device.uid, reason: error instanceof Error ? error.message : String(error) });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, homes.length) }, worker));
  const summary = summarize({
    devices: homes.length,
    latencies,
    failures,
    seconds: (performance.now() - started) / 1000,
    dir,
  });
  return { ...summary, rotated };
}

/** The device homes (`device-*` directories) a fleet run made under `dir`, sorted; none when `dir` is no directory. */
export function fleetHomes(dir: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && e.name.startsWith('device-'))
    .map((e) => join(dir, e.name))
    .sort();
}

/** A fleet device's UID (`0x…`) from its soft secure element's `uid` file; its home when that is unreadable. */
function deviceUid(home: string): string {
  try {
    const hex = readFileSync(join(home, 'se', SE_LAYOUT.uidFile), 'utf8').trim();
    if (/^[0-9a-f]+$/.test(hex)) return `0x${hex}`;
  } catch {
    // an element a crash left half made: name it by its directory
  }
  return home;
}
