import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * Reads docs/walkthrough.md and turns its console blocks into one bash script, so that
 * `npm run demo` and the e2e test run exactly the documented commands. Lines starting
 * `host:~$ ` or `device:~$ ` are commands; a command ending in `<<EOF` takes the following
 * lines up to `EOF`; everything else in a block is sample output. The part between
 * `<!-- walkthrough:device -->` and `<!-- walkthrough:end-device -->` is run once per
 * device, with `export DEVICE=device1` becoming device2, device3, …. Blocks between
 * `<!-- walkthrough:variant NAME -->` and `<!-- walkthrough:end-variant -->` run only in that
 * variant: `pkcs11` (SoftHSM2 secure elements) or `soft` (directory secure elements).
 */
export const REPO_ROOT = resolve(import.meta.dirname, '..');
export const WALKTHROUGH = join(REPO_ROOT, 'docs/walkthrough.md');
const PROMPT = /^(host|device):~\$ (.*)$/;

export type Variant = 'pkcs11' | 'soft';

export interface Step {
  prompt: 'host' | 'device';
  command: string;
  perDevice: boolean;
  /** Set when the step belongs to one secure element variant only. */
  variant: Variant | undefined;
}

export function extractSteps(markdown: string): Step[] {
  const steps: Step[] = [];
  const lines = markdown.split('\n');
  let inBlock = false;
  let perDevice = false;
  let variant: Variant | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.trim() === '<!-- walkthrough:device -->') perDevice = true;
    if (line.trim() === '<!-- walkthrough:end-device -->') perDevice = false;
    const v = /^<!-- walkthrough:variant (pkcs11|soft) -->$/.exec(line.trim());
    if (v) variant = v[1] as Variant;
    if (line.trim() === '<!-- walkthrough:end-variant -->') variant = undefined;
    if (line.startsWith('```')) {
      inBlock = !inBlock && line.trim() === '```console';
      continue;
    }
    if (!inBlock) continue;
    const m = PROMPT.exec(line);
    if (!m) continue;
    let command = m[2] as string;
    const heredoc = /<<'?(\w+)'?\s*$/.exec(command);
    if (heredoc) {
      const end = heredoc[1] as string;
      while (++i < lines.length) {
        command += '\n' + lines[i];
        if (lines[i] === end) break;
      }
    }
    steps.push({ prompt: m[1] as 'host' | 'device', command, perDevice, variant });
  }
  return steps;
}

/** The bash script: prints each command as a user would type it, then runs it. */
export function buildScript(allSteps: Step[], devices: number, variant: Variant = 'pkcs11'): string {
  const steps = allSteps.filter((s) => s.variant === undefined || s.variant === variant);
  const out: string[] = ['set -euo pipefail'];
  const emit = (s: Step, command: string) => {
    out.push(`printf '\\n%s\\n' ${shellQuote(`${s.prompt}:~$ ${command}`)}`);
    out.push(command);
  };
  let i = 0;
  while (i < steps.length) {
    const s = steps[i] as Step;
    if (!s.perDevice) {
      emit(s, s.command);
      i++;
      continue;
    }
    const group: Step[] = [];
    while (i < steps.length && (steps[i] as Step).perDevice) group.push(steps[i++] as Step);
    for (let d = 1; d <= devices; d++) {
      out.push(`printf '\\n### simulated device %d of %d\\n' ${d} ${devices}`);
      for (const g of group)
        emit(g, g.command.replace(/^export DEVICE=device1$/, `export DEVICE=device${d}`));
    }
  }
  return out.join('\n') + '\n';
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export interface RunOptions {
  devices: number;
  variant: Variant;
  env: NodeJS.ProcessEnv;
  onOutput?: (chunk: string) => void;
}

/** Runs the walkthrough in bash from the repository root; resolves with exit code and output. */
export function runWalkthrough(options: RunOptions): Promise<{ status: number; output: string }> {
  const script = buildScript(
    extractSteps(readFileSync(WALKTHROUGH, 'utf8')),
    options.devices,
    options.variant,
  );
  return new Promise((resolvePromise) => {
    const child = spawn('bash', ['-c', script], {
      cwd: REPO_ROOT,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const take = (d: Buffer) => {
      const text = d.toString();
      output += text;
      options.onOutput?.(text);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('close', (code) => resolvePromise({ status: code ?? -1, output }));
  });
}
