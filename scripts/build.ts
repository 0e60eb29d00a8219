import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build, type Plugin } from 'esbuild';

/**
 * `npm run build`: each program becomes an ES module bundle in `packages/<pkg>/dist/`, with
 * the workspace packages it uses (core, pkcs11, agent) compiled into it and the npm
 * dependencies left as imports of node_modules. Dynamic `import()`s become chunks of their own,
 * so what a command needs only when it runs is loaded only then. docs/architecture.md says why
 * esbuild bundles and not tsc output, with the measurements. Type checking stays `npm run typecheck`.
 */
export const REPO_ROOT = resolve(import.meta.dirname, '..');

/** The four programs: the package, and what its `bin/*.js` imports from `dist/`. */
export const PROGRAMS = [
  { pkg: 'server', bin: 'keyferryd' },
  { pkg: 'cli', bin: 'keyferry' },
  { pkg: 'agent', bin: 'keyferry-agent' },
  { pkg: 'sim', bin: 'keyferry-sim' },
] as const;

const WORKSPACE_SCOPE = '@keyferry/';

/** Bare imports outside the workspace (npm packages, node: builtins) stay imports at run time. */
const keepNpmImports: Plugin = {
  name: 'keep-npm-imports',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) =>
      args.path.startsWith(WORKSPACE_SCOPE) ? undefined : { path: args.path, external: true },
    );
  },
};

/**
 * `import.meta.url` (and `dirname`, `filename`) keep naming the module's source file, as when
 * tsx runs it: code that finds files relative to itself (docs/openapi.yaml, createRequire)
 * finds them the same way built or not. The source is named relative to the bundle (all of a
 * program's output files are in its `dist/`, chunks too), so a checkout can be moved.
 */
function sourceImportMeta(outdir: string): Plugin {
  return {
    name: 'source-import-meta',
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, (args) => {
        const text = readFileSync(args.path, 'utf8');
        if (!text.includes('import.meta.')) return { contents: text, loader: 'ts' };
        const fromBundle = relative(outdir, args.path).split(sep).join('/');
        const url = `new URL(${JSON.stringify(fromBundle)}, import.meta.url).href`;
        const path = (href: string) => `decodeURIComponent(new URL(${href}).pathname)`;
        const contents = text
          .replaceAll('import.meta.url', url)
          .replaceAll('import.meta.dirname', path(`'.', ${url}`))
          .replaceAll('import.meta.filename', path(url));
        return { contents, loader: 'ts' };
      });
    },
  };
}

/**
 * Builds every program (esbuild takes well under a second for all four) and writes only the
 * files whose content changed, each by an atomic rename, then removes what the build no longer
 * makes (chunks of older builds). So a build beside running programs or tests (a second vitest
 * run in the same checkout) never shows them a half-written file, and an unchanged build
 * changes nothing on disk.
 */
export async function buildAll(): Promise<void> {
  await Promise.all(
    PROGRAMS.map(async ({ pkg }) => {
      const dir = join(REPO_ROOT, 'packages', pkg);
      const outdir = join(dir, 'dist');
      const { outputFiles } = await build({
        entryPoints: [join(dir, 'src/main.ts')],
        outdir,
        write: false,
        bundle: true,
        splitting: true,
        format: 'esm',
        platform: 'node',
        target: 'node20',
        sourcemap: 'linked',
        plugins: [keepNpmImports, sourceImportMeta(outdir)],
        logLevel: 'warning',
      });
      mkdirSync(outdir, { recursive: true });
      for (const file of outputFiles) {
        if (existsSync(file.path) && readFileSync(file.path).equals(file.contents)) continue;
        const temporary = `${file.path}.${process.pid}.tmp`;
        writeFileSync(temporary, file.contents);
        renameSync(temporary, file.path);
      }
      const made = new Set(outputFiles.map((file) => file.path));
      for (const name of readdirSync(outdir)) {
        if (!made.has(join(outdir, name))) rmSync(join(outdir, name), { recursive: true, force: true });
      }
    }),
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const started = performance.now();
  await buildAll();
  process.stdout.write(
    `Built ${PROGRAMS.map((p) => p.bin).join(', ')} into packages/*/dist in ${Math.round(performance.now() - started)} ms\n`,
  );
}
