// keyferry console: live overview updates (Server-Sent Events) and the allow-list file import.
// Plain browser JavaScript, no build step; the pages work without it except for these two.

const SVG = 'http://www.w3.org/2000/svg';
const POLL_MS = 300;
const MAX_LISTED = 20;

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : '';
}

function setField(name, value) {
  for (const el of document.querySelectorAll(`[data-field="${name}"]`)) el.textContent = String(value);
}

function drawRate(svg, rate) {
  const max = Math.max(1, ...rate.perMinute);
  const h = 100;
  const w = 10;
  svg.replaceChildren();
  rate.perMinute.forEach((n, i) => {
    const bh = Math.round((n / max) * (h - 2));
    const rect = document.createElementNS(SVG, 'rect');
    rect.setAttribute('x', String(i * w + 1));
    rect.setAttribute('y', String(h - bh));
    rect.setAttribute('width', String(w - 2));
    rect.setAttribute('height', String(bh));
    const title = document.createElementNS(SVG, 'title');
    title.textContent = `${n} devices`;
    rect.append(title);
    svg.append(rect);
  });
  setField('rate-now', rate.perMinute[rate.perMinute.length - 1] ?? 0);
  setField('rate-peak', Math.max(...rate.perMinute));
  setField(
    'rate-total',
    rate.perMinute.reduce((a, b) => a + b, 0),
  );
}

function followLive() {
  const svg = document.getElementById('rate-chart');
  if (!svg || !window.EventSource) return;
  const events = new EventSource('/console/events');
  events.addEventListener('live', (e) => {
    const live = JSON.parse(e.data);
    drawRate(svg, live.rate);
    let total = 0;
    for (const [state, n] of Object.entries(live.states)) {
      total += n;
      const cell = document.querySelector(`[data-state="${state}"]`);
      if (cell) cell.textContent = String(n);
    }
    setField('devices-total', total);
    setField('live-status', `Live: updated ${new Date().toLocaleTimeString()}.`);
  });
  // the server could not read the figures this time: the last ones stay, it tries again
  events.addEventListener('failed', () =>
    setField('live-status', 'Live figures could not be read just now (keyferryd logged why): trying again.'),
  );
  // CLOSED: the browser gave up (the session ended: 401; too many open pages: 429) and does not
  // reconnect by itself; otherwise it reconnects
  events.addEventListener('error', () =>
    setField(
      'live-status',
      events.readyState === EventSource.CLOSED
        ? 'Live updates stopped: reload the page (sign in again if your session ended).'
        : 'Live updates paused: reconnecting…',
    ),
  );
}

function lines(items) {
  const known = items.filter((i) => i.line !== undefined).map((i) => i.line);
  if (known.length === 0) return '';
  const shown = known.slice(0, MAX_LISTED).join(', ');
  const more = known.length > MAX_LISTED ? ` …and ${known.length - MAX_LISTED} more` : '';
  return ` (${known.length === 1 ? 'line' : 'lines'} ${shown}${more})`;
}

function countBy(keys) {
  const m = new Map();
  for (const k of keys) m.set(k, (m.get(k) || 0) + 1);
  return [...m];
}

/** The summary `devices add --file` prints, as a list. */
function summaryLines(s) {
  const out = [`Added: ${s.added}`, `Already present: ${s.alreadyPresent}`];
  const dup = s.duplicates.slice(0, MAX_LISTED).map((d) => `line ${d.line} repeats line ${d.firstLine}`);
  out.push(`Duplicates in file: ${s.duplicates.length}${dup.length ? ` (${dup.join(', ')})` : ''}`);
  out.push(`Invalid: ${s.invalid.length}${lines(s.invalid)}`);
  const groups = countBy(s.inOtherGroup.map((d) => d.group)).map(([g, n]) => `${n} in ${g}`);
  out.push(
    `In another group: ${s.inOtherGroup.length}${groups.length ? ` (${groups.join(', ')};${lines(s.inOtherGroup).slice(1, -1)})` : ''}`,
  );
  const why = countBy(s.refused.map((r) => `${r.code}: ${r.reason}`)).map(([w, n]) => `${n} by ${w}`);
  out.push(`Refused: ${s.refused.length}${why.length ? ` (${why.join('; ')})` : ''}${lines(s.refused)}`);
  if (s.failuresTruncated) out.push('Only the first failures are listed by id; the counts are exact.');
  return out;
}

function showSummary(target, s) {
  const list = document.createElement('ul');
  list.className = 'summary';
  for (const text of summaryLines(s)) {
    const li = document.createElement('li');
    li.textContent = text;
    list.append(li);
  }
  target.replaceChildren(list);
}

function importFiles() {
  const form = document.getElementById('import-form');
  if (!form) return;
  const result = document.getElementById('import-result');
  const progress = document.getElementById('import-progress');
  const status = document.getElementById('import-status');
  const summary = document.getElementById('import-summary');
  const button = form.querySelector('button[type="submit"]');
  const show = (s) => {
    progress.max = Math.max(1, s.total);
    progress.value = s.total === 0 ? 1 : s.processed;
    status.textContent = `${s.processed} of ${s.total} ids processed (${s.status})`;
  };
  const alert = (text) => {
    const p = document.createElement('p');
    p.className = 'error';
    p.setAttribute('role', 'alert');
    p.textContent = text;
    summary.replaceChildren(p);
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return;
    result.hidden = false;
    summary.replaceChildren();
    const maxBytes = Number(form.dataset.maxBytes);
    if (maxBytes > 0 && file.size > maxBytes) {
      // refused here: uploading it would only end in the server's 413
      alert(
        `Import refused: ${file.name} has ${file.size} bytes; one import takes at most ${maxBytes} bytes: split it into several files.`,
      );
      status.textContent = 'Not imported.';
      return;
    }
    button.disabled = true;
    status.textContent = `Uploading ${file.name}…`;
    let s;
    try {
      const q = new URLSearchParams({
        product: form.elements.product.value,
        production: String(form.elements.production.checked),
      });
      const res = await fetch(`/console/import?${q}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/octet-stream',
          'x-csrf-token': csrfToken(),
          'x-file-name': encodeURIComponent(file.name),
        },
        body: await file.arrayBuffer(),
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.detail || `HTTP ${res.status}`);
      s = body;
    } catch (err) {
      alert(`Import refused: ${err.message}`);
      status.textContent = 'Not imported.';
      button.disabled = false;
      return;
    }
    // accepted (202): the job runs on the server whatever happens to this page from here on
    try {
      show(s);
      while (s.status === 'queued' || s.status === 'running') {
        await new Promise((r) => setTimeout(r, POLL_MS));
        const next = await fetch(`/console/import/${s.id}`);
        const body = await next.json().catch(() => ({}));
        if (!next.ok) throw new Error(body.detail || `HTTP ${next.status}`);
        s = body;
        show(s);
      }
      if (s.error) status.textContent += `: ${s.error.message}`;
      showSummary(summary, s);
    } catch (err) {
      alert(
        `Import accepted: it continues on the server, but its progress is unavailable (${err.message}). Check the allow-list on the Devices page, or sign in again.`,
      );
      status.textContent = `Accepted; progress unavailable (${s.processed} of ${s.total} ids processed when last seen).`;
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener('DOMContentLoaded', () => {
  followLive();
  importFiles();
});
