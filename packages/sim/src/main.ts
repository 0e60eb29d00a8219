import {
  DEVICE_ID_FORMS,
  deviceIdProblem,
  endQuietlyWhenOutputCloses,
  tryParseDeviceId,
} from '@keyferry/core';
import { Command, CommanderError, Option } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { registerAwsIotCommand } from './aws-iot/command.ts';
import { registerFleetCommand } from './fleet/command.ts';
import { createSecureElement } from './se05x/create.ts';
import { loadOrCreateVendorCa, simDir } from './se05x/vendor-ca.ts';

interface CreateOptions {
  product: string;
  uid?: string;
  pkcs11?: boolean;
  dir?: string;
  json?: boolean;
}

export function buildProgram(): Command {
  const program = new Command('keyferry-sim')
    .description(
      'keyferry simulators for development and tests: SE05x secure elements, an AWS IoT Core emulator, a device fleet',
    )
    .version(packageJson.version, '-V, --version', 'print the version')
    .showHelpAfterError(false)
    .configureOutput({ outputError: (text, write) => write(`ERROR: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
  const se05x = program.command('se05x').description('simulated NXP SE05x secure elements');
  se05x
    .command('create')
    .description(
      'make a secure element with a vendor identity (key SE_f0000000, certificate SE_f0000001, UID ' +
        'SE_7fff0206) signed by the simulated vendor CA in <data dir>/sim/; prints its UID',
    )
    .requiredOption('--product <12nc>', 'product 12NC, e.g. 935389312472 (SE050C2HQ1/Z01V3)')
    .option('--uid <0x…>', `UID (${DEVICE_ID_FORMS}); default: a random 04005001… one`)
    .addOption(
      new Option(
        '--pkcs11',
        'a SoftHSM2 token labelled aktualizr (user PIN 87654321, SO PIN 12345678) under the current ' +
          'SOFTHSM2_CONF; PKCS11_MODULE names another module',
      ).conflicts('dir'),
    )
    .option(
      '--dir <dir>',
      'a soft secure element: files (0600) in a new directory, see packages/sim/README.md',
    )
    .option('--json', 'print {uid, deviceId, product, location} as JSON')
    .addHelpText('after', '\nThe data dir is KEYFERRY_DATA_DIR (default ./data), shared with keyferryd.')
    .action(async (opts: CreateOptions) => {
      if (!/^[0-9]{12}$/.test(opts.product))
        throw new Error(`--product ${opts.product} is not a 12NC (12 digits)`);
      if (!opts.pkcs11 && opts.dir === undefined)
        throw new Error('choose where to make it: --pkcs11 or --dir DIR');
      let uid: ReturnType<typeof tryParseDeviceId>;
      if (opts.uid !== undefined) {
        uid = tryParseDeviceId(opts.uid);
        if (uid === undefined)
          throw new Error(`--uid ${opts.uid} is not a UID: ${deviceIdProblem(opts.uid)}`);
      }
      const vendor = await loadOrCreateVendorCa(simDir());
      const made = await createSecureElement({
        vendor,
        product: opts.product,
        ...(uid === undefined ? {} : { uid }),
        backend:
          opts.dir !== undefined
            ? { kind: 'dir', dir: opts.dir }
            : { kind: 'pkcs11', ...(process.env.PKCS11_MODULE ? { module: process.env.PKCS11_MODULE } : {}) },
      });
      const out = {
        uid: `0x${made.uid.hex}`,
        deviceId: made.uid.decimal,
        product: made.product,
        location: made.location,
      };
      process.stdout.write(opts.json ? `${JSON.stringify(out, null, 2)}\n` : `${out.uid}\n`);
    });
  registerAwsIotCommand(program);
  registerFleetCommand(program);
  return program;
}

/** Runs keyferry-sim; failures become one `ERROR:` line and a non-zero exit. */
export async function main(argv: string[]): Promise<number> {
  endQuietlyWhenOutputCloses([process.stdout, process.stderr], () => process.exit(0));
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError)
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0
        ? 0
        : 2;
    process.stderr.write(`ERROR: ${err instanceof Error ? err.message : String(err)}\n`);
    if (process.env.KEYFERRY_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}
