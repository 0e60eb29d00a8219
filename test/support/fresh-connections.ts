import { Agent, setGlobalDispatcher } from 'undici';

/**
 * Every `fetch` of a test opens its own connection. Tests run programs synchronously
 * (spawnSync) and make keys in-process, which can keep a test's event loop busy past the
 * management API's 5 s keep-alive timeout; the next `fetch` then went out on a pooled
 * connection keyferryd had already closed ("other side closed"). No test is about the
 * client's connection reuse, so none is lost by this.
 */
setGlobalDispatcher(new Agent({ pipelining: 0 }));
