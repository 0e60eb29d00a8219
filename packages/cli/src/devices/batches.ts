import { type ApiClient, ApiError } from '../api-client.ts';

/** Ids a CLI request carries (the server takes up to 10,000; smaller batches show progress sooner). */
export const IDS_PER_REQUEST = 1_000;

/** One device's answer, as `POST`/`DELETE el2g/devices/` give it. */
export interface DeviceAnswer {
  id: string;
  'device-id'?: string;
  status: string;
  group?: string;
  code?: string;
  reason?: string;
  limit?: string;
  usage?: number;
  max?: number;
}

export interface BatchAnswer {
  'product-id': string;
  group: string;
  production: boolean;
  counts: Record<string, number>;
  results: DeviceAnswer[];
}

export interface SentId {
  text: string;
  /** Line in the id file, when read from one. */
  line?: number;
}

/**
 * A batch that got no answer (the network, a 5xx, a 429, a refusal without per-device answers)
 * after earlier ones were committed: what those answered, and the ids not sent.
 */
export class BatchesInterrupted extends Error {
  constructor(
    readonly done: Array<{ sent: SentId; answer: DeviceAnswer }>,
    readonly notSent: readonly SentId[],
    override readonly cause: unknown,
  ) {
    super((cause as Error).message);
  }
}

/**
 * Sends ids in batches, one request after another (the server commits each batch on its own),
 * calling `onBatch` after each with the ids done so far. Answers keep the ids' order. A batch
 * without an answer after the first throws BatchesInterrupted, so the caller can say what was
 * committed; the first batch's failure is thrown as it is.
 */
export async function sendInBatches(
  api: ApiClient,
  method: 'POST' | 'DELETE',
  request: { nc12: string; production: boolean },
  ids: readonly SentId[],
  onBatch: (done: number) => void,
): Promise<Array<{ sent: SentId; answer: DeviceAnswer }>> {
  const out: Array<{ sent: SentId; answer: DeviceAnswer }> = [];
  for (let i = 0; i < ids.length; i += IDS_PER_REQUEST) {
    const part = ids.slice(i, i + IDS_PER_REQUEST);
    let answer: BatchAnswer;
    try {
      answer = await batchAnswer(api, method, {
        'product-id': request.nc12,
        devices: part.map((p) => p.text),
        production: request.production,
      });
    } catch (err) {
      if (i === 0) throw err;
      throw new BatchesInterrupted(out, ids.slice(i), err);
    }
    answer.results.forEach((result, j) => {
      out.push({ sent: part[j] ?? { text: result.id }, answer: result });
    });
    onBatch(i + part.length);
  }
  return out;
}

/**
 * One request's per-device answer. A batch in which no device ended as asked is a 4xx refusal
 * that carries the same answer in `info`: its devices are reported like any other.
 */
async function batchAnswer(api: ApiClient, method: 'POST' | 'DELETE', body: unknown): Promise<BatchAnswer> {
  try {
    return await api.call<BatchAnswer>(method, api.factoryPath('el2g/devices/'), body);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    // keyferryd sends the answer in `info`; a proxy or an older server may put `results` on top
    const problem = err.problem as unknown as { results?: unknown; info?: { results?: unknown } };
    const results = problem.info?.results ?? problem.results;
    if (!Array.isArray(results)) throw err;
    return { ...(problem.info as object), results } as BatchAnswer;
  }
}
