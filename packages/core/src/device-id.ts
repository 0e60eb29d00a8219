import { KeyferryError } from './errors.ts';

/** Bytes in an SE05x unique ID (object 0x7FFF0206). */
export const DEVICE_UID_BYTES = 18;
const HEX_FORM = /^0x[0-9a-fA-F]{36}$/;
const DECIMAL_FORM = /^[0-9]{42}$/;
// 42 decimal digits is the width of the canonical form; every SE05x UID (they begin 0x04…)
// is below it. A 36-hex-digit value past it has no canonical form and is refused.
const MAX_UID = 10n ** 42n - 1n;

export const DEVICE_ID_FORMS = '0x followed by 36 hex digits, or 42 decimal digits';

/** What is wrong with a hex id of the right form whose value is past 42 decimal digits. */
export const DEVICE_ID_TOO_LARGE = `its value does not fit the 42-digit decimal form EdgeLock 2GO ids use (the largest is 0x${MAX_UID.toString(16).padStart(DEVICE_UID_BYTES * 2, '0')}); SE05x UIDs start 0x04: read the UID again (keyferry-agent uid)`;

/**
 * A device id: the secure element's 18-byte UID. `decimal` is the canonical form used in
 * APIs (the UID's integer value, 42 digits with leading zeros); `hex` is 36 lowercase hex
 * digits without prefix, as `ssscli se05x uid` prints it. Never held as a JS number.
 */
export interface DeviceId {
  readonly decimal: string;
  readonly hex: string;
}

/** True when `text` is one of the two accepted forms (no trimming, no other spelling). */
export function isDeviceId(text: string): boolean {
  return tryParseDeviceId(text) !== undefined;
}

/** Parses `0x` + 36 hex digits or 42 decimal digits; returns undefined for anything else. */
export function tryParseDeviceId(text: string): DeviceId | undefined {
  if (typeof text !== 'string') return undefined;
  let value: bigint;
  if (HEX_FORM.test(text)) value = BigInt(text);
  else if (DECIMAL_FORM.test(text)) value = BigInt(text);
  else return undefined;
  if (value > MAX_UID) return undefined;
  return deviceIdFromBigInt(value);
}

/**
 * Why `text` is not a device id, as a clause that says what to do: the accepted forms, or
 * {@link DEVICE_ID_TOO_LARGE} for an id of the right form whose value has no 42-digit decimal
 * form. Undefined when `text` is a device id.
 */
export function deviceIdProblem(text: string): string | undefined {
  if (typeof text === 'string' && (HEX_FORM.test(text) || DECIMAL_FORM.test(text))) {
    return BigInt(text) > MAX_UID ? DEVICE_ID_TOO_LARGE : undefined;
  }
  return `use ${DEVICE_ID_FORMS}`;
}

/** `invalid device id "<text>": <what is wrong>`, the one wording of every refusal of an id. */
export function invalidDeviceIdMessage(text: string): string {
  const problem = deviceIdProblem(text);
  if (problem === undefined) throw new TypeError(`${JSON.stringify(text)} is a valid device id`);
  return `invalid device id ${JSON.stringify(text)}: ${problem}`;
}

/** Parses a device id or throws `invalid_device_id` naming the id and what is wrong with it. */
export function parseDeviceId(text: string): DeviceId {
  const id = tryParseDeviceId(text);
  if (id === undefined) {
    throw new KeyferryError('invalid_device_id', invalidDeviceIdMessage(text), { detail: { id: text } });
  }
  return id;
}

/** The id of a UID read from a secure element (exactly 18 bytes). */
export function deviceIdFromUid(uid: Uint8Array): DeviceId {
  if (uid.length !== DEVICE_UID_BYTES) {
    throw new TypeError(`a secure element UID has ${DEVICE_UID_BYTES} bytes, got ${uid.length}`);
  }
  return deviceIdFromBigInt(BigInt('0x' + Buffer.from(uid).toString('hex')));
}

/** The 18 UID bytes of a device id. */
export function deviceIdToUid(id: DeviceId): Uint8Array {
  return Uint8Array.from(Buffer.from(id.hex, 'hex'));
}

function deviceIdFromBigInt(value: bigint): DeviceId {
  return {
    decimal: value.toString(10).padStart(42, '0'),
    hex: value.toString(16).padStart(DEVICE_UID_BYTES * 2, '0'),
  };
}
