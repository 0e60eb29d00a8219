import { X509Certificate } from 'node:crypto';
import {
  DEVICE_STATES,
  type DeviceState,
  devicesByState,
  latestFailures,
  type ObjectFailure,
  provisioningRate,
  type RateSeries,
} from '../../allowlist/fleet-status.ts';
import { type PlanUsage, planUsage } from '../../allowlist/plan.ts';
import { listIntermediateCas } from '../../el2g/intermediate-cas.ts';
import type { Factory } from '../../factories/factories.ts';
import type { Db } from '../../storage/database.ts';
import { html, type SafeHtml } from './html.ts';
import { formatTime, page, type Viewer } from './layout.ts';

const DAY_MS = 86_400_000;

export interface Overview {
  plan: PlanUsage;
  states: Record<DeviceState, number>;
  rate: RateSeries;
  failures: ObjectFailure[];
  cas: Array<{ name: string; algorithm: string; notAfter: string }>;
}

/** What the overview shows, and what its live event stream repeats. */
export async function loadOverview(db: Db, factory: Factory, now = new Date()): Promise<Overview> {
  const [plan, states, rate, failures, cas] = await Promise.all([
    planUsage(db, factory.id, now),
    devicesByState(db, factory.id),
    provisioningRate(db, factory.id, now),
    latestFailures(db, factory.id),
    listIntermediateCas(db, factory.id),
  ]);
  return {
    plan,
    states,
    rate,
    failures,
    cas: cas.map((ca) => ({
      name: ca.name,
      algorithm: ca.algorithm,
      notAfter: new Date(new X509Certificate(ca.certificate).validTo).toISOString(),
    })),
  };
}

/** The live part the event stream sends: the rate series and the state counts. */
export async function loadLive(db: Db, factory: Factory, now = new Date()) {
  const [rate, states] = await Promise.all([
    provisioningRate(db, factory.id, now),
    devicesByState(db, factory.id),
  ]);
  return { rate, states };
}

function planSection(plan: PlanUsage, now: Date): SafeHtml {
  const daysLeft =
    plan.evaluationEndsAt === null
      ? null
      : Math.max(0, Math.ceil((Date.parse(plan.evaluationEndsAt) - now.getTime()) / DAY_MS));
  return html`<section aria-labelledby="plan-h" class="card">
<h2 id="plan-h">Plan and usage</h2>
<dl class="facts">
<dt>Plan</dt><dd data-field="plan-kind">${plan.kind}</dd>
<dt>Devices this subscription year</dt><dd><span data-field="devices-used">${plan.devices.used}</span> of <span data-field="devices-max">${plan.devices.max}</span></dd>
<dt>Subscription year</dt><dd>${plan.subscriptionYear.start.slice(0, 10)} to ${plan.subscriptionYear.end.slice(0, 10)}</dd>
<dt>Evaluation days left</dt><dd data-field="evaluation-days-left">${daysLeft === null ? 'none (commercial plan)' : daysLeft}${plan.evaluationExpired ? ' (expired: adding devices is refused)' : ''}</dd>
<dt>Per device</dt><dd>${plan.maxKeypairsPerDevice} key pairs, ${plan.maxCertificatesPerDevice} certificates</dd>
</dl>
<meter min="0" max="${plan.devices.max}" value="${plan.devices.used}" aria-label="devices used of the plan">${plan.devices.used} of ${plan.devices.max}</meter>
</section>`;
}

function statesSection(states: Record<DeviceState, number>): SafeHtml {
  const total = DEVICE_STATES.reduce((n, s) => n + states[s], 0);
  return html`<section aria-labelledby="states-h" class="card">
<h2 id="states-h">Devices by provisioning state</h2>
<table class="states">
<thead><tr><th scope="col">State</th><th scope="col" class="num">Devices</th></tr></thead>
<tbody>${DEVICE_STATES.map(
    (s) =>
      html`<tr><th scope="row"><a href="/console/devices?state=${s}">${s}</a></th><td class="num" data-state="${s}">${states[s]}</td></tr>`,
  )}</tbody>
<tfoot><tr><th scope="row">All allow-listed devices</th><td class="num" data-field="devices-total">${total}</td></tr></tfoot>
</table>
</section>`;
}

/** Bars as SVG, drawn here and redrawn by console.js from the same numbers. */
export function rateChart(rate: RateSeries): SafeHtml {
  const max = Math.max(1, ...rate.perMinute);
  const w = 10;
  const h = 100;
  const last = rate.perMinute[rate.perMinute.length - 1] ?? 0;
  return html`<figure class="chart">
<svg id="rate-chart" viewBox="0 0 ${rate.perMinute.length * w} ${h}" preserveAspectRatio="none" role="img" aria-labelledby="rate-caption" data-max="${max}">
${rate.perMinute.map((n, i) => {
  const bh = Math.round((n / max) * (h - 2));
  return html`<rect x="${i * w + 1}" y="${h - bh}" width="${w - 2}" height="${bh}"><title>${n} devices</title></rect>`;
})}
</svg>
<figcaption id="rate-caption">Devices provisioned per minute over the last ${rate.perMinute.length} minutes (from ${rate.from} UTC); this minute: <strong data-field="rate-now">${last}</strong>/min, peak <span data-field="rate-peak">${Math.max(...rate.perMinute)}</span>/min, <span data-field="rate-total">${rate.perMinute.reduce((a, b) => a + b, 0)}</span> devices in all. <span class="live" data-field="live-status">Live updates start when the page has loaded.</span></figcaption>
</figure>`;
}

function failuresSection(failures: ObjectFailure[]): SafeHtml {
  return html`<section aria-labelledby="fail-h" class="card wide">
<h2 id="fail-h">Latest failures</h2>
${
  failures.length === 0
    ? html`<p>No device reported a failure.</p>`
    : html`<table>
<thead><tr><th scope="col">When</th><th scope="col">Device</th><th scope="col">Object</th><th scope="col">State</th><th scope="col">Reason</th></tr></thead>
<tbody>${failures.map(
        (f) =>
          html`<tr><td>${formatTime(f.at)}</td><td><a class="id" href="/console/devices/${f.deviceId}">${f.deviceId}</a></td><td>${f.object}</td><td>${f.state}</td><td>${f.reason ?? '—'}</td></tr>`,
      )}</tbody>
</table>`
}
</section>`;
}

function casSection(cas: Overview['cas'], now: Date): SafeHtml {
  return html`<section aria-labelledby="cas-h" class="card wide">
<h2 id="cas-h">Intermediate CAs</h2>
${
  cas.length === 0
    ? html`<p>None yet: run <code>keyferry el2g config-device-gateway</code>.</p>`
    : html`<table>
<thead><tr><th scope="col">Name</th><th scope="col">Algorithm</th><th scope="col">Expires</th><th scope="col" class="num">Days left</th></tr></thead>
<tbody>${cas.map(
        (ca) =>
          html`<tr><td>${ca.name}</td><td>${ca.algorithm}</td><td>${formatTime(ca.notAfter)}</td><td class="num">${Math.floor((Date.parse(ca.notAfter) - now.getTime()) / DAY_MS)}</td></tr>`,
      )}</tbody>
</table>`
}
</section>`;
}

export function overviewPage(viewer: Viewer, o: Overview, now = new Date()): SafeHtml {
  return page(
    viewer,
    'overview',
    'Overview',
    html`<div class="grid">
${planSection(o.plan, now)}
${statesSection(o.states)}
<section aria-labelledby="rate-h" class="card wide">
<h2 id="rate-h">Provisioning rate</h2>
${rateChart(o.rate)}
</section>
${failuresSection(o.failures)}
${casSection(o.cas, now)}
</div>`,
  );
}
