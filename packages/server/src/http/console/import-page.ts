import { MAX_ID_FILE_BYTES } from '@keyferry/core';
import { html, type SafeHtml } from './html.ts';
import { page, type Viewer } from './layout.ts';

export function importPage(viewer: Viewer, products: Array<{ nc12: string; name: string }>): SafeHtml {
  const canWrite = viewer.principal.scopes.has('write');
  const body = canWrite
    ? html`<p>Upload a text file with one device id a line (0x + 36 hex digits, or 42 digits), or a CSV whose header has an <code>id</code> column. Ids already on the allow-list are left as they are.</p>
<form id="import-form" class="import" data-max-bytes="${MAX_ID_FILE_BYTES}">
<div><label for="import-product">Product</label>
<select id="import-product" name="product" required>${products.map(
        (p) => html`<option value="${p.nc12}">${p.name} (${p.nc12})</option>`,
      )}</select></div>
<div><input id="import-production" name="production" type="checkbox"> <label for="import-production">Production devices (the product's production group)</label></div>
<div><label for="import-file">Id file or CSV</label>
<input id="import-file" name="file" type="file" accept=".txt,.csv,.ids,text/plain,text/csv" required></div>
<div class="actions"><button type="submit">Import</button></div>
</form>
<section id="import-result" aria-labelledby="result-h" hidden>
<h2 id="result-h">Progress</h2>
<progress id="import-progress" max="1" value="0" aria-describedby="import-status"></progress>
<p id="import-status" role="status" aria-live="polite"></p>
<div id="import-summary"></div>
</section>`
    : html`<p class="error" role="alert" id="import-refused">This token has the read scope only. Importing changes the allow-list, which needs a token with the write scope: sign out and sign in with one.</p>`;
  return page(viewer, 'import', 'Allow-list import', body);
}
