import { tokenCallError } from './failures.ts';
import { type Handle, type PKCS11, p11, type Template } from './pkcs11js.ts';

/** Picks token objects by CKA_LABEL, CKA_ID or both; at least one must be given. */
export interface ObjectSelector {
  readonly label?: string;
  readonly id?: Uint8Array;
}

/** The PKCS#11 calls a {@link Token} makes, on one logged-in session, with errors made readable. */
export class TokenSession {
  #open = true;

  constructor(
    readonly lib: PKCS11,
    readonly handle: Handle,
    readonly tokenLabel: string,
    private readonly onClose: () => void,
  ) {}

  /** Runs PKCS#11 calls, turning their failures into errors that name the token and the action. */
  run<T>(action: string, fn: () => T): T {
    if (!this.#open) throw new TypeError(`token '${this.tokenLabel}' is closed; open it again to ${action}`);
    try {
      return fn();
    } catch (error) {
      throw tokenCallError(error, this.tokenLabel, action);
    }
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.onClose();
  }

  find(template: Template): Handle[] {
    const found: Handle[] = [];
    this.lib.C_FindObjectsInit(this.handle, template);
    try {
      for (;;) {
        const batch = this.lib.C_FindObjects(this.handle, 64);
        found.push(...batch);
        if (batch.length < 64) return found;
      }
    } finally {
      this.lib.C_FindObjectsFinal(this.handle);
    }
  }

  /** One attribute's value, or undefined when the object lacks it or hides it (sensitive). */
  attribute(object: Handle, type: number): Buffer | undefined {
    try {
      const [result] = this.lib.C_GetAttributeValue(this.handle, object, [{ type }]);
      return result?.value;
    } catch (error) {
      if (error instanceof Error && /CKR_ATTRIBUTE_(TYPE_INVALID|SENSITIVE)/.test(error.message))
        return undefined;
      throw error;
    }
  }

  boolean(object: Handle, type: number): boolean | undefined {
    const value = this.attribute(object, type);
    return value === undefined ? undefined : value[0] === 1;
  }

  ulong(object: Handle, type: number): number | undefined {
    const value = this.attribute(object, type);
    // CK_ULONG in host byte order; every platform keyferry targets is little-endian.
    return value === undefined || value.length === 0
      ? undefined
      : value.readUIntLE(0, Math.min(value.length, 6));
  }

  create(template: Template): Handle {
    return this.lib.C_CreateObject(this.handle, template);
  }

  destroy(object: Handle): void {
    this.lib.C_DestroyObject(this.handle, object);
  }
}

/** The template that matches a selector, within one object class if one is given. */
export function selectorTemplate(selector: ObjectSelector, objectClass?: number): Template {
  if (selector.label === undefined && selector.id === undefined) {
    throw new TypeError('select token objects by label, id or both');
  }
  const template: Template = objectClass === undefined ? [] : [{ type: p11.CKA_CLASS, value: objectClass }];
  if (selector.label !== undefined) template.push({ type: p11.CKA_LABEL, value: selector.label });
  if (selector.id !== undefined) template.push({ type: p11.CKA_ID, value: Buffer.from(selector.id) });
  return template;
}

/** How a selector reads in a message: `label 'SE_83000042' and id 01`. */
export function describeSelector(selector: ObjectSelector): string {
  const parts: string[] = [];
  if (selector.label !== undefined) parts.push(`label '${selector.label}'`);
  if (selector.id !== undefined) parts.push(`id ${Buffer.from(selector.id).toString('hex') || '(empty)'}`);
  return parts.join(' and ');
}
