import cluster, { type Worker } from 'node:cluster';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '@keyferry/core';
import { AggregatorRegistry } from 'prom-client';
import type { Config } from './config/schema.ts';
import {
  LISTEN_FILE,
  type PreparedPrimary,
  type RunningService,
  startPrimary,
  startService,
} from './service.ts';

/**
 * `workers: N` > 1: one primary and N worker processes (node:cluster). The primary prepares
 * the data dir, database (migrations), custody and demo factory, runs the timers (audit
 * retention), forks the workers and writes listen.json once every worker listens; it binds no
 * listener itself. Node's cluster accepts each connection in the primary and hands it to the
 * workers in turn (round-robin, the default on Linux), so one worker's busy event loop never
 * holds another's connections. Each worker opens the database and unlocks the custody itself
 * and serves the management API, device-link and gateway. Bulk jobs are claimed through
 * their database leases, whichever worker took the request. A worker that dies is forked
 * again; SIGTERM/SIGINT to the primary stop every worker (readiness off first), then the
 * primary. Workers ignore those signals (a Ctrl-C reaches the whole process group) and exit
 * when the primary tells them to, or at once when it is gone (its IPC channel closes).
 */

/** Messages between the primary and its workers (IPC, JSON). */
type FromWorker =
  | { type: 'keyferry:listening'; addresses: RunningService['addresses'] }
  | { type: 'keyferry:metrics'; id: number };
type ToWorker =
  | { type: 'keyferry:stop' }
  | { type: 'keyferry:metrics'; id: number; body?: string; error?: string };

/** How long the primary waits for its workers to stop before it kills them. */
const STOP_GRACE_MS = 15_000;
/** Pause before forking a worker again, so a worker that dies at start does not spin. */
const RESTART_DELAY_MS = 500;

export interface ClusterPrimary {
  primary: PreparedPrimary;
  addresses: RunningService['addresses'];
  workers(): number[];
  stop(): Promise<void>;
}

/**
 * Starts the primary and its workers; resolves once all of them listen and listen.json is
 * written. A worker that cannot start (it prints why) fails the whole start.
 */
export async function startClusterPrimary(options: {
  config: Config;
  embeddedDefaults: boolean;
  workers: number;
}): Promise<ClusterPrimary> {
  const primary = await startPrimary({ config: options.config, embeddedDefaults: options.embeddedDefaults });
  const { log } = primary.ctx;
  const listenFile = join(primary.ctx.config.dataDir, LISTEN_FILE);
  const aggregator = new AggregatorRegistry();
  let stopping = false;
  let started = false;

  const onMessage = (worker: Worker, message: FromWorker) => {
    if (message?.type !== 'keyferry:metrics') return;
    const answer = (reply: ToWorker) => worker.isConnected() && worker.send(reply);
    aggregator.clusterMetrics().then(
      (body) => answer({ type: 'keyferry:metrics', id: message.id, body }),
      (err: Error) => answer({ type: 'keyferry:metrics', id: message.id, error: err.message }),
    );
  };
  cluster.on('message', onMessage);
  /** Workers that said they listen: they have their stop listener. */
  const listening = new WeakSet<Worker>();

  /** Forks one worker; resolves with its addresses once it listens, rejects if it exits first. */
  const fork = () =>
    new Promise<RunningService['addresses']>((resolve, reject) => {
      const worker = cluster.fork();
      const onListening = (message: FromWorker) => {
        if (message?.type !== 'keyferry:listening') return;
        worker.off('message', onListening);
        worker.off('exit', onEarlyExit);
        listening.add(worker);
        resolve(message.addresses);
      };
      const onEarlyExit = (code: number | null, signal: string | null) => {
        worker.off('message', onListening);
        reject(
          new Error(`worker ${worker.process.pid} exited (${signal ?? `code ${code}`}) before it listened`),
        );
      };
      worker.on('message', onListening);
      worker.once('exit', onEarlyExit);
    });

  const replace = (worker: Worker, code: number | null, signal: string | null) => {
    if (stopping || !started) return;
    log.error(
      { worker: worker.process.pid, code, signal },
      `worker ${worker.process.pid} exited (${signal ?? `code ${code}`}); starting another`,
    );
    setTimeout(() => {
      if (stopping) return;
      fork().then(
        () => log.info('replacement worker listens'),
        (err: Error) => log.error({ err: err.message }, 'replacement worker did not start'),
      );
    }, RESTART_DELAY_MS).unref();
  };
  cluster.on('exit', replace);

  const stopWorkers = async () => {
    const running = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
    await Promise.all(
      running.map(
        (w) =>
          new Promise<void>((done) => {
            if (w.isDead()) return done();
            const kill = setTimeout(() => {
              log.error(
                { worker: w.process.pid },
                `worker ${w.process.pid} did not stop within ${STOP_GRACE_MS / 1000} s of being told; killed`,
              );
              w.process.kill('SIGKILL');
            }, STOP_GRACE_MS);
            w.once('exit', () => {
              clearTimeout(kill);
              done();
            });
            const tell = () => {
              if (w.isConnected()) w.send({ type: 'keyferry:stop' } satisfies ToWorker);
              else w.process.kill('SIGKILL');
            };
            if (listening.has(w)) return tell();
            // a worker still starting (a replacement, a sibling of one that failed) may not
            // listen for the word yet, and would miss it: told once it listens
            const onListening = (message: FromWorker) => {
              if (message?.type !== 'keyferry:listening') return;
              w.off('message', onListening);
              tell();
            };
            w.on('message', onListening);
          }),
      ),
    );
  };

  let addresses: RunningService['addresses'];
  try {
    const all = await Promise.all(Array.from({ length: options.workers }, fork));
    addresses = all[0]!;
  } catch (err) {
    stopping = true;
    await stopWorkers();
    await primary.close();
    throw err;
  }
  started = true;
  writeFileAtomic(listenFile, JSON.stringify(addresses) + '\n', 0o600);
  log.info({ addresses, workers: options.workers }, 'keyferryd ready');
  return {
    primary,
    addresses,
    workers: () =>
      Object.values(cluster.workers ?? {})
        .map((w) => w?.process.pid)
        .filter((pid): pid is number => pid !== undefined),
    async stop() {
      stopping = true;
      rmSync(listenFile, { force: true });
      await stopWorkers();
      cluster.off('exit', replace);
      cluster.off('message', onMessage);
      await primary.close();
    },
  };
}

/**
 * In a worker: starts the listeners, tells the primary where they are, answers /metrics from
 * the primary's aggregation, and stops on the primary's word.
 */
export async function startClusterWorker(options: {
  config: Config;
  embeddedDefaults: boolean;
  onStop: (reason: string) => void;
}): Promise<RunningService> {
  // a Ctrl-C reaches every process of the group: the primary decides, and tells the workers
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  const pending = new Map<number, { resolve(body: string): void; reject(err: Error): void }>();
  let next = 0;
  // before the start, though the primary tells a worker to stop only once it says it listens:
  // onStop during the start stops the service once it is up (main.ts)
  process.on('message', (message: ToWorker) => {
    if (message?.type === 'keyferry:stop') options.onStop('primary stops');
    if (message?.type === 'keyferry:metrics') {
      const waiting = pending.get(message.id);
      pending.delete(message.id);
      if (message.body !== undefined) waiting?.resolve(message.body);
      else waiting?.reject(new Error(`metrics of the other workers: ${message.error}`));
    }
  });
  const service = await startService({ ...options, role: 'worker' });
  const metrics = service.ctx.metrics;
  if (metrics) {
    AggregatorRegistry.setRegistries([metrics.registry]);
    new AggregatorRegistry(); // installs the worker's answer to the primary's metrics requests
    metrics.aggregateWith(
      () =>
        new Promise<string>((resolve, reject) => {
          const id = next++;
          pending.set(id, { resolve, reject });
          process.send?.({ type: 'keyferry:metrics', id } satisfies FromWorker);
        }),
    );
  }
  process.send?.({ type: 'keyferry:listening', addresses: service.addresses } satisfies FromWorker);
  return service;
}

export const isClusterWorker = () => cluster.isWorker;
