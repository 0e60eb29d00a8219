import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { planUsage } from '../allowlist/plan.ts';
import type { Database } from '../storage/database.ts';
import { statementsSent } from '../storage/statement-count.ts';

export type ListenerName = 'api' | 'device-link' | 'gateway';

/** Seconds: from a fast cached answer to a slow PostgreSQL enrollment. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * keyferryd's Prometheus metrics (docs/deployment.md lists them). One registry per service, so
 * several services in one process (tests) never share counters. Request metrics are counted
 * as requests finish; fleet figures (objects by state, allow-list, plan, CRL age, pool) are
 * read from the database when scraped.
 */
export class ServiceMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<'listener' | 'route' | 'method' | 'status'>;
  readonly #latency: Histogram<'listener' | 'route'>;
  readonly #enrollments: Counter<'object'>;
  readonly #refusals: Counter<'listener' | 'code'>;

  constructor(database: Database) {
    const registers = [this.registry];
    this.#requests = new Counter({
      name: 'keyferry_http_requests_total',
      help: 'Requests answered, by listener, route, method and status',
      labelNames: ['listener', 'route', 'method', 'status'],
      registers,
    });
    this.#latency = new Histogram({
      name: 'keyferry_http_request_duration_seconds',
      help: 'Time from request to answer, by listener and route',
      labelNames: ['listener', 'route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#enrollments = new Counter({
      name: 'keyferry_enrollments_total',
      help: 'Certificates handed to devices by the device-link (simpleenroll/simplereenroll), by certificate object',
      labelNames: ['object'],
      registers,
    });
    this.#refusals = new Counter({
      name: 'keyferry_refusals_total',
      help: 'Refused requests by listener and problem code',
      labelNames: ['listener', 'code'],
      registers,
    });
    new Gauge({
      name: 'keyferry_device_objects',
      aggregator: 'first',
      help: 'Secure objects of allow-listed devices by factory and provisioning state',
      labelNames: ['factory', 'state'],
      registers,
      async collect() {
        this.reset();
        const rows = await database.db
          .selectFrom('device_objects as o')
          .innerJoin('devices as d', 'd.id', 'o.device_row_id')
          .innerJoin('factories as f', 'f.id', 'd.factory_id')
          .where('d.deleted_at', 'is', null)
          .select(['f.name as factory', 'o.state', (eb) => eb.fn.countAll().as('n')])
          .groupBy(['f.name', 'o.state'])
          .execute();
        for (const r of rows) this.set({ factory: r.factory, state: r.state }, Number(r.n));
      },
    });
    new Gauge({
      name: 'keyferry_allowlist_devices',
      aggregator: 'first',
      help: 'Devices on the allow-list, by factory',
      labelNames: ['factory'],
      registers,
      async collect() {
        this.reset();
        const rows = await database.db
          .selectFrom('devices as d')
          .innerJoin('factories as f', 'f.id', 'd.factory_id')
          .where('d.deleted_at', 'is', null)
          .select(['f.name as factory', (eb) => eb.fn.countAll().as('n')])
          .groupBy('f.name')
          .execute();
        for (const r of rows) this.set({ factory: r.factory }, Number(r.n));
      },
    });
    const planGauge = (
      name: string,
      help: string,
      pick: (u: Awaited<ReturnType<typeof planUsage>>) => number,
    ) =>
      new Gauge({
        name,
        help,
        aggregator: 'first',
        labelNames: ['factory'],
        registers,
        async collect() {
          this.reset();
          const factories = await database.db.selectFrom('factories').select(['id', 'name']).execute();
          for (const f of factories) this.set({ factory: f.name }, pick(await planUsage(database.db, f.id)));
        },
      });
    planGauge(
      'keyferry_plan_devices_used',
      'Devices added this subscription year (the plan quota in use)',
      (u) => u.devices.used,
    );
    planGauge(
      'keyferry_plan_devices_max',
      'Devices the plan allows per subscription year',
      (u) => u.devices.max,
    );
    new Gauge({
      name: 'keyferry_crl_age_seconds',
      aggregator: 'first',
      help: 'Seconds since the current CRL of each intermediate CA was signed (thisUpdate)',
      labelNames: ['factory', 'ca'],
      registers,
      async collect() {
        this.reset();
        const rows = await database.db
          .selectFrom('crls as c')
          .innerJoin('intermediate_cas as ca', 'ca.id', 'c.ca_id')
          .innerJoin('factories as f', 'f.id', 'ca.factory_id')
          .select(['f.name as factory', 'ca.name as ca', 'c.this_update'])
          .execute();
        const now = Date.now();
        for (const r of rows)
          this.set({ factory: r.factory, ca: r.ca }, (now - Date.parse(r.this_update)) / 1000);
      },
    });
    new Counter({
      name: 'keyferry_db_statements_total',
      help: 'Statements sent to the database (BEGIN and COMMIT included)',
      registers,
      collect() {
        this.reset();
        this.inc(statementsSent());
      },
    });
    new Gauge({
      name: 'keyferry_db_pool_connections',
      help: 'Database connections by state (PostgreSQL pool: total, idle, waiting requests; SQLite: one connection)',
      labelNames: ['state'],
      registers,
      collect() {
        const pool = database.poolStats?.() ?? { total: 1, idle: 1, waiting: 0 };
        this.set({ state: 'total' }, pool.total);
        this.set({ state: 'idle' }, pool.idle);
        this.set({ state: 'waiting' }, pool.waiting);
      },
    });
  }

  /** Counts one finished request; `route` is the route's template, never the raw URL. */
  request(listener: ListenerName, route: string, method: string, status: number, seconds: number): void {
    this.#requests.inc({ listener, route, method, status: String(status) });
    this.#latency.observe({ listener, route }, seconds);
  }

  refused(listener: ListenerName, code: string): void {
    this.#refusals.inc({ listener, code });
  }

  enrolled(object: string): void {
    this.#enrollments.inc({ object });
  }

  #cluster: (() => Promise<string>) | undefined;

  /**
   * With several workers: the text comes from `aggregate` (the primary's prom-client
   * AggregatorRegistry over every worker's registry: request counts summed, figures read from
   * the database taken once), not from this worker alone.
   */
  aggregateWith(aggregate: () => Promise<string>): void {
    this.#cluster = aggregate;
  }

  /** Prometheus text exposition. */
  async text(): Promise<{ contentType: string; body: string }> {
    const body = this.#cluster ? await this.#cluster() : await this.registry.metrics();
    return { contentType: this.registry.contentType, body };
  }
}
