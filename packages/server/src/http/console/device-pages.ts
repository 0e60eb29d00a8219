import { parseDeviceId } from '@keyferry/core';
import type { DeviceCertificate, SecureObjectProvisioning } from '../../allowlist/device-provisioning.ts';
import { DEVICE_STATES, type DeviceFilter, type FoundDevice } from '../../allowlist/fleet-status.ts';
import type { AuditRecord } from '../../audit/audit-log.ts';
import { html, type SafeHtml } from './html.ts';
import { formatTime, page, type Viewer } from './layout.ts';

export interface DeviceListView {
  filter: DeviceFilter;
  groups: string[];
  products: Array<{ nc12: string; name: string }>;
  devices: FoundDevice[];
  next: number | null;
  /** Whether this is a later page (offers the way back to the first). */
  paged: boolean;
  error?: string;
}

function option(value: string, label: string, selected: string | undefined): SafeHtml {
  return html`<option value="${value}"${value === selected ? html` selected` : ''}>${label}</option>`;
}

function query(filter: DeviceFilter, after?: number): string {
  const q = new URLSearchParams();
  if (filter.id) q.set('q', filter.id);
  if (filter.group) q.set('group', filter.group);
  if (filter.nc12) q.set('product', filter.nc12);
  if (filter.state) q.set('state', filter.state);
  if (after !== undefined) q.set('after', String(after));
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}

export function devicesPage(viewer: Viewer, v: DeviceListView): SafeHtml {
  const f = v.filter;
  return page(
    viewer,
    'devices',
    'Devices',
    html`<form method="get" action="/console/devices" class="filters" role="search">
<div><label for="q">Device id</label>
<input id="q" name="q" value="${f.id ?? ''}" placeholder="0x… (36 hex digits) or 42 digits" aria-describedby="q-help" spellcheck="false" autocomplete="off">
<small id="q-help">Either form finds the same device.</small></div>
<div><label for="group">Group</label>
<select id="group" name="group">${option('', 'any group', f.group)}${v.groups.map((g) => option(g, g, f.group))}</select></div>
<div><label for="product">Product</label>
<select id="product" name="product">${option('', 'any product', f.nc12)}${v.products.map((p) => option(p.nc12, `${p.name} (${p.nc12})`, f.nc12))}</select></div>
<div><label for="state">State</label>
<select id="state" name="state">${option('', 'any state', f.state)}${DEVICE_STATES.map((s) => option(s, s, f.state))}</select></div>
<div class="actions"><button type="submit">Search</button> <a href="/console/devices">Clear</a></div>
</form>
${v.error ? html`<p class="error" role="alert">${v.error}</p>` : ''}
<table class="devices" aria-describedby="devices-caption">
<caption id="devices-caption">${v.devices.length === 0 ? 'No device matches.' : `${v.devices.length} devices on this page, in allow-list order.`}</caption>
<thead><tr><th scope="col">Device id (hex)</th><th scope="col">Decimal</th><th scope="col">Group</th><th scope="col">Product</th><th scope="col">State</th><th scope="col">Last connection</th></tr></thead>
<tbody>${v.devices.map((d) => {
      const hex = `0x${parseDeviceId(d.deviceId).hex}`;
      return html`<tr><td><a class="id" href="/console/devices/${d.deviceId}">${hex}</a></td><td class="id">${d.deviceId}</td><td>${d.group}</td><td>${d.nc12}</td><td>${d.state}</td><td>${formatTime(d.lastConnection)}</td></tr>`;
    })}</tbody>
</table>
<nav aria-label="Pages" class="pager">
${v.paged ? html`<a href="/console/devices${query(f)}">First page</a>` : ''}
${v.next !== null ? html`<a href="/console/devices${query(f, v.next)}" rel="next">Next page</a>` : ''}
</nav>`,
  );
}

export interface DeviceView {
  deviceId: string;
  group: string;
  nc12: string;
  objects: SecureObjectProvisioning[];
  certificates: DeviceCertificate[];
  timeline: AuditRecord[];
}

/** One line of what an audit step did: the object states a report set, or why a call was refused. */
function stepDetail(entry: AuditRecord): SafeHtml {
  const d = entry.detail;
  const results = Array.isArray(d.results) ? (d.results as Array<Record<string, unknown>>) : undefined;
  if (results) {
    return html`<ul class="states">${results.map(
      (r) =>
        html`<li>${String(r.name ?? '')}: <strong>${String(r.state ?? r.status ?? '')}</strong>${r.reason ? html` — ${String(r.reason)}` : ''}</li>`,
    )}</ul>`;
  }
  const parts = Object.entries(d)
    .filter(([, v]) => v !== null && typeof v !== 'object')
    .map(([k, v]) => `${k}: ${String(v)}`);
  return html`${parts.join(', ')}`;
}

export function devicePage(viewer: Viewer, v: DeviceView): SafeHtml {
  const hex = `0x${parseDeviceId(v.deviceId).hex}`;
  return page(
    viewer,
    'devices',
    `Device ${hex}`,
    html`<dl class="facts">
<dt>Hex</dt><dd class="id">${hex}</dd>
<dt>Decimal</dt><dd class="id">${v.deviceId}</dd>
<dt>Group</dt><dd>${v.group}</dd>
<dt>Product</dt><dd>${v.nc12}</dd>
</dl>
<section aria-labelledby="obj-h">
<h2 id="obj-h">Objects</h2>
<table>
<thead><tr><th scope="col">Object</th><th scope="col">Type</th><th scope="col">State</th><th scope="col">Reason</th></tr></thead>
<tbody>${v.objects.map(
      (o) =>
        html`<tr><td>${o.secureObjectName}</td><td>${o.secureObjectType}</td><td data-object-state="${o.secureObjectName}">${o.provisioningState}</td><td>${o.reason ?? '—'}</td></tr>`,
    )}</tbody>
</table>
</section>
<section aria-labelledby="cert-h">
<h2 id="cert-h">Certificates</h2>
${
  v.certificates.length === 0
    ? html`<p>None issued yet.</p>`
    : html`<table>
<thead><tr><th scope="col">Object</th><th scope="col">Serial</th><th scope="col">Expires</th><th scope="col">Revoked</th></tr></thead>
<tbody>${v.certificates.map(
        (c) =>
          html`<tr><td>${c.object ?? '—'}</td><td class="id">${c.serialHex}</td><td>${formatTime(c.notAfter)}</td><td>${c.revokedAt === null ? 'no' : `${formatTime(c.revokedAt)}${c.revocationReason ? ` (${c.revocationReason})` : ''}`}</td></tr>`,
      )}</tbody>
</table>`
}
</section>
<section aria-labelledby="tl-h">
<h2 id="tl-h">Timeline</h2>
<ol class="timeline" reversed>${v.timeline.map(
      (e) =>
        html`<li><time datetime="${e.at}">${formatTime(e.at)}</time> <strong>${e.action}</strong> by ${e.actor}<div>${stepDetail(e)}</div><small>correlation id <code>${e.correlationId}</code></small></li>`,
    )}</ol>
</section>`,
  );
}
