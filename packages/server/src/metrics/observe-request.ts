import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ListenerName, ServiceMetrics } from './service-metrics.ts';

/** Counts a raw-server request (device-link, gateway) when its answer is sent. */
export function observeRequest(
  metrics: ServiceMetrics,
  listener: ListenerName,
  req: IncomingMessage,
  res: ServerResponse,
  route: string,
): void {
  const started = process.hrtime.bigint();
  res.once('finish', () =>
    metrics.request(
      listener,
      route,
      req.method ?? '',
      res.statusCode,
      Number(process.hrtime.bigint() - started) / 1e9,
    ),
  );
}
