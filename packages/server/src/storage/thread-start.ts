import type { Worker } from 'node:worker_threads';

/** What a database thread (thread reader, WAL checkpointer) says first: `ready`, or why not. */
export interface FirstMessage {
  type: string;
  message?: string;
}

/**
 * The first message of a thread just created. Its error, or its exit before it said anything
 * (a `process.exit` in its start), rejects: waiting for the message alone would wait forever.
 */
export function firstMessage(worker: Worker): Promise<FirstMessage> {
  return new Promise((resolve, reject) => {
    const settle = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    const onMessage = (message: FirstMessage) => {
      settle();
      resolve(message);
    };
    const onError = (err: Error) => {
      settle();
      reject(err);
    };
    const onExit = (code: number) => {
      settle();
      reject(new Error(`its thread exited (exit code ${code}) before it said it was ready`));
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}
