import { type IdFile, KeyferryError, parseIdFile as parseDeviceIdFile } from '@keyferry/core';
import { CliError } from '../cli-error.ts';

export { type FileId, type IdFile, MAX_ID_FILE_BYTES } from '@keyferry/core';

/** The shared id-file parser, its refusals as the CLI's one-line errors. */
export function parseIdFile(name: string, bytes: Uint8Array): IdFile {
  try {
    return parseDeviceIdFile(name, bytes);
  } catch (err) {
    if (err instanceof KeyferryError) throw new CliError(err.message);
    throw err;
  }
}
