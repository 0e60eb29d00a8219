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
 * Sends ids in batches, one request after another (the server commits each batch on its own),
 * calling `onBatch` after each with the ids done so far. Answers keep the ids' order.
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
    const answer = await refusedBatchAsAnswer(
      api.call<BatchAnswer>(method, api.factoryPath('el2g/devices/'), {
        'product-id': request.nc12,
        devices: part.map((p) => p.text),
        production: request.production,
      }),
    );
    answer.results.forEach((result, j) => {
      out.push({ sent: part[j] ?? { text: result.id }, answer: result });
    });
    onBatch(i + part.length);
  }
  return out;
}

/**
 * A batch in which no device changed is a 4xx (fioctl takes any 2xx for success), its problem
 * body carrying the same per-device results; those are answers like any other.
 */
async function refusedBatchAsAnswer(call: Promise<BatchAnswer>): Promise<Pick<BatchAnswer, 'results'>> {
  try {
    return await call;
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    const problem = err.problem as unknown as { results?: unknown; info?: { results?: unknown } };
    const results = problem.results ?? problem.info?.results;
    if (!Array.isArray(results)) throw err;
    return { results: results as DeviceAnswer[] };
  }
}
