/** The closing summary of `keyferry-sim fleet`: counts, failures, rate and latency percentiles. */

export interface DeviceFailure {
  readonly uid: string;
  readonly reason: string;
}

export interface FleetSummary {
  readonly devices: number;
  readonly provisioned: number;
  readonly failed: number;
  readonly failures: readonly DeviceFailure[];
  /** Wall time of the whole run (create, allow-list, register), seconds. */
  readonly seconds: number;
  readonly devicesPerSecond: number;
  /** Per-device auto-register time (retries included), milliseconds; null when none succeeded. */
  readonly latencyMs: { readonly p50: number | null; readonly p99: number | null };
  readonly dir: string;
}

/** Nearest-rank percentile of sorted values; null for none. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] ?? null;
}

export function summarize(options: {
  devices: number;
  latencies: readonly number[];
  failures: readonly DeviceFailure[];
  seconds: number;
  dir: string;
}): FleetSummary {
  const sorted = [...options.latencies].sort((a, b) => a - b);
  const round = (v: number | null) => (v === null ? null : Math.round(v));
  return {
    devices: options.devices,
    provisioned: sorted.length,
    failed: options.failures.length,
    failures: options.failures,
    seconds: Math.round(options.seconds * 1000) / 1000,
    devicesPerSecond: options.seconds > 0 ? Math.round((sorted.length / options.seconds) * 10) / 10 : 0,
    latencyMs: { p50: round(percentile(sorted, 50)), p99: round(percentile(sorted, 99)) },
    dir: options.dir,
  };
}

/** Most failures listed one by one; the rest are counted. */
const LISTED_FAILURES = 20;

/** `done` names what each device went through: `Provisioned` (default) or, for a rotation pass, `Renewed`. */
export function formatSummary(s: FleetSummary, done = 'Provisioned'): string {
  const ms = (v: number | null) => (v === null ? '-' : `${v} ms`);
  const lines = [
    `${done}: ${s.provisioned} of ${s.devices} devices`,
    `Failed: ${s.failed}`,
    `Time: ${s.seconds.toFixed(3)} s (${s.devicesPerSecond} devices/s)`,
    `Latency: p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)}`,
    `Secure elements: ${s.dir}`,
  ];
  if (s.failed > 0) {
    lines.push('Failures:');
    for (const f of s.failures.slice(0, LISTED_FAILURES)) lines.push(`\t${f.uid}  ${f.reason}`);
    if (s.failed > LISTED_FAILURES)
      lines.push(`\t… and ${s.failed - LISTED_FAILURES} more (--json lists all)`);
  }
  return `${lines.join('\n')}\n`;
}
