import type { Factory } from '../../factories/factories.ts';
import type { Principal } from '../../tokens/api-tokens.ts';
import { html, type SafeHtml } from './html.ts';

export type ConsolePage = 'overview' | 'devices' | 'import';

/** Who is looking, for the header of every page. */
export interface Viewer {
  factory: Factory;
  principal: Principal;
  csrf: string;
}

const NAV: ReadonlyArray<[ConsolePage, string, string]> = [
  ['overview', '/console/', 'Overview'],
  ['devices', '/console/devices', 'Devices'],
  ['import', '/console/import', 'Allow-list import'],
];

function document(title: string, body: SafeHtml, csrf?: string): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${csrf ? html`<meta name="csrf-token" content="${csrf}">` : ''}
<title>${title} · keyferry console</title>
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
${body}
</body>
</html>
`;
}

export function page(
  viewer: Viewer,
  current: ConsolePage | undefined,
  title: string,
  main: SafeHtml,
): SafeHtml {
  const scopes = [...viewer.principal.scopes].sort().join(' + ');
  return document(
    title,
    html`<header class="top">
<span class="brand">keyferry</span>
<nav aria-label="Console">
<ul>${NAV.map(
      ([id, href, label]) =>
        html`<li><a href="${href}"${id === current ? html` aria-current="page"` : ''}>${label}</a></li>`,
    )}</ul>
</nav>
<span class="who">factory <strong>${viewer.factory.name}</strong> · token scope ${scopes}</span>
<form method="post" action="/console/sign-out" class="sign-out">
<input type="hidden" name="csrf" value="${viewer.csrf}">
<button type="submit">Sign out</button>
</form>
</header>
<main id="main" tabindex="-1">
<h1>${title}</h1>
${main}
</main>`,
    viewer.csrf,
  );
}

export function signInPage(error?: string): SafeHtml {
  return document(
    'Sign in',
    html`<main id="main" class="sign-in" tabindex="-1">
<h1>keyferry console</h1>
<p>Sign in with an API token of your factory: a read token to look, a write token to change the allow-list.</p>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="/console/sign-in">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required aria-describedby="token-help">
<p id="token-help" class="help">Made with <code>keyferry</code> or printed by keyferryd on its first start (kf_…). It is sent once; the browser keeps only a session cookie.</p>
<button type="submit">Sign in</button>
</form>
</main>`,
  );
}

export function errorPage(viewer: Viewer | undefined, title: string, message: string): SafeHtml {
  const body = html`<p class="error" role="alert">${message}</p><p><a href="/console/">Back to the overview</a></p>`;
  if (viewer) return page(viewer, undefined, title, body);
  return document(title, html`<main id="main"><h1>${title}</h1>${body}</main>`);
}

export function formatTime(iso: string | null): string {
  return iso === null ? '—' : `${iso.slice(0, 19).replace('T', ' ')} UTC`;
}
