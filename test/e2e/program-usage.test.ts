import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BINS, runBinAsync } from '../support/processes.ts';

const UID = '0x04005001eee3ba1ee96e60047e57da0f6880';
const home = mkdtempSync(join(tmpdir(), 'keyferry-usage-'));
// no server is needed: each of these is refused before any request
const env = { HOME: home, XDG_CONFIG_HOME: join(home, 'xdg'), KEYFERRY_SERVER: 'http://127.0.0.1:9' };
const keyferry = (args: string[]) => runBinAsync('keyferry', args, { env });

describe('every program has --version (was: unknown option)', () => {
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  it.each(Object.keys(BINS) as Array<keyof typeof BINS>)(
    '%s --version prints its package.json version',
    {
      timeout: 60_000,
    },
    async (bin) => {
      const pkg = join(BINS[bin], '../../package.json');
      const { version } = JSON.parse(readFileSync(pkg, 'utf8')) as { version: string };
      for (const flag of ['--version', '-V']) {
        const res = await runBinAsync(bin, [flag], { env });
        expect(res).toEqual({ status: 0, stdout: `${version}\n`, stderr: '' });
      }
    },
  );
});

describe('login --help names where the login is saved (was: one fixed path)', () => {
  it('names KEYFERRY_CONFIG_FILE and XDG_CONFIG_HOME', { timeout: 60_000 }, async () => {
    const help = await keyferry(['login', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout.replace(/\s+/g, ' ')).toContain(
      'in KEYFERRY_CONFIG_FILE, else $XDG_CONFIG_HOME/keyferry/config.json, else ~/.config/keyferry/config.json (0600)',
    );
  });
});

describe("commander's messages say what the user most likely meant", () => {
  it('a mistyped subcommand of el2g devices is named, with the likely one (was: too many arguments for list)', {
    timeout: 60_000,
  }, async () => {
    const res = await keyferry(['el2g', 'devices', 'shwo', UID]);
    expect(res).toEqual({
      status: 2,
      stdout: '',
      stderr: "ERROR: unknown subcommand 'shwo'; did you mean 'show'?\n",
    });
    const gateway = await keyferry(['devices', 'lsit']);
    expect(gateway.stderr).toBe("ERROR: unknown subcommand 'lsit'; did you mean 'list'?\n");
    const explicit = await keyferry(['el2g', 'devices', 'list', UID]);
    expect(explicit.stderr).toBe(`ERROR: 'list' takes no arguments, got '${UID}'\n`);
    const far = await keyferry(['el2g', 'devices', 'frobnicate']);
    expect(far.stderr).toBe("ERROR: unknown subcommand 'frobnicate'; --help lists them\n");
  });

  it.each(['delete', 'add'])(
    'devices %s with a device id but no 12NC says a 12NC is needed first (was: missing device-ids, or invalid product id)',
    { timeout: 60_000 },
    async (command) => {
      const res = await keyferry(['el2g', 'devices', command, UID]);
      expect(res).toEqual({
        status: 2,
        stdout: '',
        stderr:
          `ERROR: ${UID} is a device id: a 12NC (product id) is needed first, as in ` +
          `keyferry el2g devices ${command} 935389312472 ${UID} (keyferry el2g status lists the factory's product ids)\n`,
      });
    },
  );

  it('a mistyped subcommand of tokens is named, with the likely one (was: too many arguments for list)', {
    timeout: 60_000,
  }, async () => {
    expect(await keyferry(['tokens', 'crate'])).toEqual({
      status: 2,
      stdout: '',
      stderr: "ERROR: unknown subcommand 'crate'; did you mean 'create'?\n",
    });
    const explicit = await keyferry(['tokens', 'list', 'extra']);
    expect(explicit.stderr).toBe("ERROR: 'list' takes no arguments, got 'extra'\n");
  });

  it('el2g certs set-validity with no change refuses, naming the flags (was: an empty change, reported done)', {
    timeout: 60_000,
  }, async () => {
    expect(
      await keyferry(['-t', 'kf_x', '-f', 'acme', 'el2g', 'certs', 'set-validity', 'fio-device-gateway-ca']),
    ).toEqual({
      status: 2,
      stdout: '',
      stderr:
        'ERROR: nothing to change for fio-device-gateway-ca: give at least one of --validity, --renewal-validity, --renewal-window\n',
    });
  });

  it('devices delete with a 12NC and no id asks for an id', { timeout: 60_000 }, async () => {
    const res = await keyferry(['el2g', 'devices', 'delete', '935389312472']);
    expect(res).toEqual({
      status: 2,
      stdout: '',
      stderr: 'ERROR: name at least one device id after the 12NC\n',
    });
  });
});

/** A web server in keyferryd's place (a proxy, a login page): answers what `reply` says, records what it was asked. */
async function fakeServer(reply: (req: IncomingMessage, res: ServerResponse) => void) {
  const asked: Array<{ url: string; token: string }> = [];
  const server = createServer((req, res) => {
    asked.push({ url: req.url ?? '', token: String(req.headers['osf-token'] ?? '') });
    reply(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, asked, close: () => new Promise((r) => server.close(r)) };
}

describe('an answer that is not from keyferryd is told as such (was: JavaScript internals)', () => {
  const NOT_KEYFERRYD =
    "which is not an answer from keyferryd: check that --server (or KEYFERRY_SERVER) is keyferryd's management API URL\n";
  it.each([
    [
      'a redirect (was: Cannot read properties of undefined)',
      (res: ServerResponse) => res.writeHead(301, { location: 'https://sso.example.test/login' }).end(),
      '301 redirecting to https://sso.example.test/login to GET /ota/factories/, ',
    ],
    [
      'a 200 HTML page (was: Unexpected token <)',
      (res: ServerResponse) =>
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>sign in</html>'),
      '200 to GET /ota/factories/, ',
    ],
    [
      'a 502 with a JSON type and a cut-off body (was: Unterminated string in JSON, no status)',
      (res: ServerResponse) =>
        res.writeHead(502, { 'content-type': 'application/json' }).end('{"code":"upstr'),
      '502 to GET /ota/factories/ ("{\\"code\\":\\"upstr"), ',
    ],
  ])('%s', { timeout: 60_000 }, async (_name, reply, said) => {
    const fake = await fakeServer((_req, res) => reply(res));
    try {
      const res = await runBinAsync('keyferry', ['--server', fake.url, '-t', 'kf_x', 'factories'], { env });
      expect(res).toEqual({
        status: 1,
        stdout: '',
        stderr: `ERROR: ${fake.url} answered ${said}${NOT_KEYFERRYD}`,
      });
    } finally {
      await fake.close();
    }
  });
});

describe('an empty environment variable does not hide what keyferry login saved (was: the empty value won)', () => {
  it('empty KEYFERRY_SERVER, KEYFERRY_FACTORY, KEYFERRY_TOKEN and TLS variables count as unset', {
    timeout: 60_000,
  }, async () => {
    const fake = await fakeServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end('[]'),
    );
    try {
      const config = join(mkdtempSync(join(tmpdir(), 'keyferry-login-')), 'config.json');
      writeFileSync(config, JSON.stringify({ server: fake.url, factory: 'acme', token: 'kf_saved' }));
      const empty = {
        KEYFERRY_CONFIG_FILE: config,
        KEYFERRY_SERVER: '',
        KEYFERRY_FACTORY: '',
        KEYFERRY_TOKEN: '',
        KEYFERRY_TOKEN_FILE: '',
        KEYFERRY_SERVER_CA: '',
        KEYFERRY_CLIENT_CERT: '',
        KEYFERRY_CLIENT_KEY: '',
      };
      const res = await runBinAsync('keyferry', ['tokens', 'list'], { env: { ...env, ...empty } });
      expect(res.stderr).toBe('');
      expect(res.status).toBe(0);
      expect(fake.asked).toEqual([{ url: '/ota/factories/acme/tokens/', token: 'kf_saved' }]);
      // one of the pair empty is no pair at all (was: --client-cert and --client-key go together)
      const half = await runBinAsync('keyferry', ['factories'], {
        env: { ...env, ...empty, KEYFERRY_CLIENT_KEY: undefined },
      });
      expect(half.stderr).toBe('');
      expect(half.status).toBe(0);
    } finally {
      await fake.close();
    }
  });
});

describe('devices add --file whose later batch gets no answer (was: the committed batches went unreported)', () => {
  it('prints what the committed batches did, how many ids were not sent from which line, and what to do', {
    timeout: 60_000,
  }, async () => {
    const bodies: Array<{ devices: string[] }> = [];
    const fake = await fakeServer((req, res) => {
      let text = '';
      req.on('data', (c) => {
        text += c;
      });
      req.on('end', () => {
        const body = JSON.parse(text) as { devices: string[] };
        bodies.push(body);
        if (bodies.length === 1) {
          res.writeHead(200, { 'content-type': 'application/json' }).end(
            JSON.stringify({
              'product-id': '935389312472',
              group: 'fio-935389312472',
              production: false,
              counts: { added: body.devices.length },
              results: body.devices.map((id) => ({ id, status: 'added' })),
            }),
          );
        } else {
          res
            .writeHead(503, { 'content-type': 'application/problem+json' })
            .end(
              JSON.stringify({ code: 'unavailable', detail: 'the database is not answering', status: 503 }),
            );
        }
      });
    });
    try {
      const dir = mkdtempSync(join(tmpdir(), 'keyferry-batches-'));
      const file = join(dir, 'ids.txt');
      const ids = Array.from({ length: 1500 }, (_, i) => `0x04005001${i.toString(16).padStart(28, '0')}`);
      writeFileSync(file, `${ids.join('\n')}\n`);
      const args = [
        '--server',
        fake.url,
        '-t',
        'kf_x',
        '-f',
        'demo',
        'el2g',
        'devices',
        'add',
        '935389312472',
      ];
      const res = await runBinAsync('keyferry', [...args, '--file', file], { env });
      expect(bodies.map((b) => b.devices.length)).toEqual([1000, 500]);
      expect(res.status).toBe(1);
      expect(res.stdout).toContain('Added: 1000\n');
      expect(res.stdout).toMatch(/\nNot sent: 500 \(from line 1001\)\n$/);
      expect(res.stderr).toMatch(
        new RegExp(
          `ERROR: the ids from line 1001 of ${file} on were not sent: .*the database is not answering.*; the 1000 before them were \\(see the summary\\)\\. Run the same command again once that is solved: ids already added answer "already present"\\n$`,
        ),
      );
      bodies.length = 0;
      const json = await runBinAsync('keyferry', ['--json', ...args, '--file', file], { env });
      expect(json.status).toBe(1);
      expect(JSON.parse(json.stdout)).toMatchObject({ added: 1000, notSent: { count: 500, fromLine: 1001 } });
    } finally {
      await fake.close();
    }
  });
});

describe('el2g status with a section of its own that cannot be read (was: nothing printed)', () => {
  it("prints fioctl's four sections and the readable ones, then names the one it could not read", {
    timeout: 60_000,
  }, async () => {
    const answers: Record<string, unknown> = {
      '/ota/factories/demo/el2g-proxy/products': [{ nc12: 935389312472, commercialName: 'SE050C2HQ1/Z01V3' }],
      '/ota/factories/demo/el2g/overview/': {
        subdomain: 'abc.device-link.example',
        'product-ids': [935389312472],
      },
      '/ota/factories/demo/el2g/secure-objects/': [],
      '/ota/factories/demo/el2g/intermediate-cas/': [],
      '/ota/factories/demo/el2g-proxy/secure-objects': { content: [] },
    };
    const fake = await fakeServer((req, res) => {
      const answer = answers[req.url ?? ''];
      if (answer === undefined) {
        res
          .writeHead(503, { 'content-type': 'application/problem+json' })
          .end(JSON.stringify({ code: 'unavailable', detail: 'the plan is not answering', status: 503 }));
      } else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
    try {
      const res = await runBinAsync(
        'keyferry',
        ['--server', fake.url, '-t', 'kf_x', '-f', 'demo', 'el2g', 'status'],
        { env },
      );
      expect(fake.asked.map((a) => a.url).at(-1)).toBe('/ota/factories/demo/el2g/plan/');
      expect(res.status).toBe(1);
      expect(res.stdout).toMatch(/^# Subdomain: abc\.device-link\.example\n/);
      expect(res.stdout).toContain('\t935389312472  SE050C2HQ1/Z01V3\n');
      expect(res.stdout).toContain('# Intermediate CAs\n');
      expect(res.stderr).toMatch(
        /^ERROR: el2g status could not read the plan section: .*the plan is not answering/,
      );
    } finally {
      await fake.close();
    }
  });
});

/**
 * A listing keyferry reads page by page: `route` answers `first` (two rows, a cursor, and
 * `headers`), then, asked for the page after it, `second` or, without one, a 503.
 */
const pagedServer = (first: unknown[], headers: Record<string, string>, second?: unknown[]) =>
  fakeServer((req, res) => {
    const later = (req.url ?? '').includes('after=');
    if (later && second === undefined) {
      res
        .writeHead(503, { 'content-type': 'application/problem+json' })
        .end(JSON.stringify({ code: 'unavailable', detail: 'the database is not answering', status: 503 }));
      return;
    }
    res
      .writeHead(200, {
        'content-type': 'application/json',
        ...(later ? {} : { 'x-next-cursor': '2', ...headers }),
      })
      .end(JSON.stringify(later ? second : first));
  });

/** `args` of the demo factory against the fake, with a `$TMPDIR` of its own for the spool. */
async function listPaged(url: string, args: string[]) {
  const tmp = mkdtempSync(join(tmpdir(), 'keyferry-spool-'));
  try {
    const res = await runBinAsync('keyferry', ['--server', url, '-t', 'kf_x', '-f', 'demo', ...args], {
      env: { ...env, TMPDIR: tmp },
    });
    return { ...res, spooled: readdirSync(tmp) };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * The steps of "a later page fails" for one listing: keyferry `args` asks `route` for its
 * first page (answered with `first` and `headers`) and the one after it (a 503), then prints
 * nothing on stdout, the error on stderr, exits 1, and leaves no spool file behind.
 */
async function expectLaterPageFails(
  route: string,
  args: string[],
  first: unknown[],
  headers: Record<string, string> = {},
) {
  const fake = await pagedServer(first, headers);
  try {
    const res = await listPaged(fake.url, args);
    expect(fake.asked.map((a) => a.url)).toEqual([`${route}?limit=1000`, `${route}?limit=1000&after=2`]);
    expect(res).toEqual({
      status: 1,
      stdout: '',
      stderr: 'ERROR: the database is not answering (unavailable)\n',
      spooled: [],
    });
  } finally {
    await fake.close();
  }
}

describe('el2g devices list --json whose later page fails (was: a cut-off JSON array on stdout)', () => {
  const device = (n: number) => ({
    'device-group': 'fio-935389312472',
    id: `0x04005001${n.toString(16).padStart(28, '0')}`,
    'last-connection': null,
  });
  const route = '/ota/factories/demo/el2g/devices/';
  const args = ['--json', 'el2g', 'devices'];
  const headers = { 'x-device-groups': 'fio-935389312472' };

  it('prints nothing on stdout, the error on stderr, exits 1, and leaves no spool file behind', {
    timeout: 60_000,
  }, async () => {
    await expectLaterPageFails(route, args, [device(1), device(2)], headers);
  });

  it('prints every page as one JSON array when all pages answer', { timeout: 60_000 }, async () => {
    const fake = await pagedServer([device(1), device(2)], headers, [device(3), device(4)]);
    try {
      const res = await listPaged(fake.url, args);
      expect(res.stderr).toBe('');
      expect(res.status).toBe(0);
      expect(JSON.parse(res.stdout)).toEqual([device(1), device(2), device(3), device(4)]);
      expect(res.spooled).toEqual([]);
    } finally {
      await fake.close();
    }
  });
});

describe('devices list whose later page fails (as before it spooled its pages)', () => {
  const device = (n: number) => ({
    name: `line1-device-${n}`,
    factory: 'demo',
    'cert-fingerprint': `fp${n}`,
    'cert-serial': `0${n}`,
    'first-seen': '2026-11-29T10:01:02.000Z',
    'last-seen': '2026-11-29T10:01:02.000Z',
  });
  it.each([[[]], [['--json']]])(
    '%j prints nothing on stdout, the error on stderr, exits 1, and leaves no spool file behind',
    { timeout: 60_000 },
    async (flags: string[]) => {
      await expectLaterPageFails(
        '/ota/factories/demo/devices/',
        [...flags, 'devices', 'list'],
        [device(1), device(2)],
      );
    },
  );
});

describe('keys ca revoke-device-ca / disable-device-ca refused (was: its first step printed before the refusal)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-revoke-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  it.each([
    [
      ['revoke-device-ca', '--ca-serial', '123', '--ca-serial', '0x12'],
      2,
      'Value 0x12 is not a valid base 10 serial',
    ],
    [['disable-device-ca', '--ca-serial', '12a'], 2, 'Value 12a is not a valid base 10 serial'],
    [
      ['revoke-device-ca', '--ca-serial', '123', '--ca-file', 'missing.pem'],
      1,
      `cannot read the device CA ${join(dir, 'missing.pem')}`,
    ],
  ])(
    '%j prints only the refusal on stderr and asks the server nothing',
    { timeout: 60_000 },
    async (args, status, said) => {
      const fake = await fakeServer((_req, res) => res.writeHead(500).end());
      try {
        const [command, ...flags] = args as [string, ...string[]];
        const res = await runBinAsync(
          'keyferry',
          ['--server', fake.url, '-t', 'kf_x', '-f', 'demo', 'keys', 'ca', command, dir, ...flags],
          { env },
        );
        expect(res.stdout).toBe('');
        expect(res.stderr).toMatch(/^ERROR: [^\n]*\n$/);
        expect(res.stderr).toContain(said);
        expect(res.status).toBe(status);
        expect(fake.asked).toEqual([]);
      } finally {
        await fake.close();
      }
    },
  );
});

describe('the API token over plain HTTP to another machine (was: sent without a word)', () => {
  it('warns once on stderr, whatever the number of requests, and --json stays clean', {
    timeout: 60_000,
  }, async () => {
    const fake = await fakeServer((req, res) => {
      const second = (req.url ?? '').includes('after=');
      res
        .writeHead(200, { 'content-type': 'application/json', ...(second ? {} : { 'x-next-cursor': '1' }) })
        .end(JSON.stringify([{ 'device-group': 'fio-935389312472', id: '1', 'last-connection': null }]));
    });
    try {
      // 0.0.0.0 is not a loopback address, yet Linux connects it to this machine: the fake answers
      const server = fake.url.replace('127.0.0.1', '0.0.0.0');
      const res = await runBinAsync(
        'keyferry',
        ['--server', server, '-t', 'kf_x', '-f', 'demo', '--json', 'el2g', 'devices'],
        { env },
      );
      expect(fake.asked).toHaveLength(2);
      expect(res.status).toBe(0);
      expect(JSON.parse(res.stdout)).toHaveLength(2);
      expect(res.stderr).toBe(
        `WARNING: ${server} is plain HTTP to another machine: the API token crosses the network unencrypted, readable by anyone on the way; use an https:// --server (keyferryd's api.tls)\n`,
      );
      // loopback: nothing said
      const local = await runBinAsync(
        'keyferry',
        ['--server', fake.url, '-t', 'kf_x', '-f', 'demo', '--json', 'el2g', 'devices'],
        { env },
      );
      expect(local.stderr).toBe('');
      expect(local.status).toBe(0);
    } finally {
      await fake.close();
    }
  });
});

describe('a login file that cannot be read (was: silently ignored, the defaults used)', () => {
  it('is refused before any request, naming it and what to do, exit 1', { timeout: 60_000 }, async () => {
    const config = join(mkdtempSync(join(tmpdir(), 'keyferry-login-')), 'config.json');
    writeFileSync(config, '{"server": "https://keyferry.example.com", "token": "kf_');
    const res = await runBinAsync('keyferry', ['factories'], {
      env: { ...env, KEYFERRY_CONFIG_FILE: config },
    });
    expect(res).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: the login file ${config} is not valid JSON: fix it or remove it (keyferry login writes a new one)\n`,
    });
  });
});

describe('a bad flag or argument exits 2, as every other usage error (was: some exited 1)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-usage-args-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const template = join(dir, 'template.json');
  writeFileSync(template, '{"Resources": {}}');
  const pki = join(dir, 'pki');
  const auth = ['-t', 'kf_x', '-f', 'demo'];
  it.each([
    [
      [...auth, 'el2g', 'devices', 'add', '935389312472', UID, '--file', template],
      'give device ids as arguments or with --file, not both',
    ],
    [[...auth, 'el2g', 'devices', 'add', '935389312472'], 'name at least one device id, or --file FILE'],
    [[...auth, 'el2g', 'devices', 'add', '93538931247', UID], 'invalid product id "93538931247"'],
    [
      [...auth, 'tokens', 'create', '--scope', 'read', '--description', 'x', '--expires', 'soon'],
      '--expires "soon" is not a duration',
    ],
    [[...auth, 'el2g', 'certs', 'expiring', '--within', '3x'], '--within "3x" is not a duration'],
    [
      [...auth, 'keys', 'ca', 'create', pki, '--local-ca=maybe'],
      '--local-ca takes true or false, not "maybe"',
    ],
    [[...auth, 'keys', 'ca', 'add-device-ca', pki], 'At least one of --online-ca or --local-ca must be true'],
    [
      [...auth, 'keys', 'ca', 'add-device-ca', pki, '--local-ca', '--local-ca-filename', 'a/b.pem'],
      '--local-ca-filename must be a file name, not a path: a/b.pem',
    ],
    [
      [...auth, 'keys', 'ca', 'revoke-device-ca', pki],
      'At least one of --ca-file or --ca-serial must be provided',
    ],
    [
      [...auth, 'keys', 'ca', 'revoke-device-ca', pki, '--ca-serial', '0x12'],
      'Value 0x12 is not a valid base 10 serial',
    ],
    [
      [...auth, 'keys', 'ca', 'create', pki, '--hsm-pin', '1234', '--hsm-pin-file', template],
      '--hsm-pin and --hsm-pin-file both given',
    ],
    [
      [...auth, 'keys', 'ca', 'create', pki, '--hsm-module', '/x.so'],
      '--hsm-pin and --hsm-token-label missing',
    ],
    [[...auth, '--client-cert', template, 'factories'], '--client-cert and --client-key go together'],
    [
      [...auth, 'el2g', 'config-aws-iot', '--jitp-template', template],
      '--jitp-template needs --jitp-role-arn ARN',
    ],
    [
      [...auth, 'el2g', 'config-aws-iot', '--jitp-template', template, '--jitp-role-arn', 'admin'],
      '--jitp-role-arn admin is not an IAM role ARN',
    ],
  ])('%j', { timeout: 60_000 }, async (args, said) => {
    const res = await keyferry(args);
    expect(res.stderr).toMatch(/^ERROR: .*\n$/);
    expect(res.stderr).toContain(said);
    expect(res.status).toBe(2);
  });
  // how keyferry was called, not what a server answered: 2 as well (was: 1)
  it.each([
    [['--server', '127.0.0.1:8080', ...auth, 'factories'], 'needs http:// or https:// in front'],
    [['--server', 'ftp://127.0.0.1:8080', ...auth, 'factories'], 'must start with http:// or https://'],
    [['-t', 'kf_x', 'el2g', 'devices'], 'no factory given: pass -f/--factory NAME'],
    [['-f', 'demo', 'el2g', 'devices'], 'no API token: pass -t/--token'],
    [['login'], 'keyferry login needs a token'],
  ])('%j', { timeout: 60_000 }, async (args, said) => {
    // nothing from the environment of whoever runs the tests (an empty variable is unset)
    const unset = { KEYFERRY_FACTORY: '', KEYFERRY_TOKEN: '', KEYFERRY_TOKEN_FILE: '' };
    const res = await runBinAsync('keyferry', args, { env: { ...env, ...unset } });
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(/^ERROR: .*\n$/);
    expect(res.stderr).toContain(said);
    expect(res.status).toBe(2);
  });
});
