// How `muster serve` stops (SIGTERM, SIGINT) within a bound: it stops
// accepting connections at once, lets requests in flight finish for at most
// the grace, then cuts the connections still open, then stops the controller,
// the protocols and the store, each within its own bound. While it drains, a
// request on a connection still open is answered 503 with Connection: close
// (fastify does that for every route once closing, /readyz included), so a
// load balancer stops sending; idle keep-alive connections are closed at once.
import type { FastifyInstance } from 'fastify';

export interface ShutdownStep {
  /** What the step stops, for the log. */
  name: string;
  run(): Promise<void>;
}

export interface ShutdownOptions {
  app: FastifyInstance;
  /** How long requests in flight may take to finish. */
  graceMs: number;
  /** Bound for each later step, and for the server to finish closing once its connections are cut. Default 5 s. */
  stepMs?: number;
  /** Run in order once the HTTP side is closed. */
  steps: readonly ShutdownStep[];
  log: { info(msg: string, fields?: Record<string, unknown>): void; warn(msg: string, fields?: Record<string, unknown>): void };
}

export interface ShutdownReport {
  /** Every connection ended within the grace. */
  drained: boolean;
  /** Connections still open when the grace ran out, closed by force. */
  connectionsCut: number;
  /** Steps that did not finish within their bound (left behind). */
  stepsCut: string[];
  ms: number;
}

/** How often connections that turned idle during the drain are closed. */
const REAP_MS = 100;

/** Whether `p` settled within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

const openConnections = (server: FastifyInstance['server']) => new Promise<number>((r) => server.getConnections((e, n) => r(e ? 0 : n)));

export async function shutDown(o: ShutdownOptions): Promise<ShutdownReport> {
  const started = Date.now();
  const stepMs = o.stepMs ?? 5_000;
  const { server } = o.app;
  const closed = o.app.close().catch((e: Error) => o.log.warn('closing the HTTP server failed', { error: e.message }));
  // fastify closes idle keep-alive connections once, when it starts closing; a
  // connection whose last request is answered during the drain turns idle
  // later, and would otherwise stay open until its keep-alive timeout.
  const reap = setInterval(() => server.closeIdleConnections(), REAP_MS);
  const stepsCut: string[] = [];
  let drained: boolean;
  let connectionsCut = 0;
  try {
    // fastify closes the listener after its preClose hooks, a tick or two after close().
    for (let i = 0; i < 200 && server.listening; i++) await new Promise((r) => setTimeout(r, 5));
    o.log.info('stopped accepting connections; draining', { graceMs: o.graceMs, connections: await openConnections(server) });
    drained = await within(closed, o.graceMs);
    if (!drained) {
      connectionsCut = await openConnections(server);
      o.log.warn('shutdown grace over: closing the connections still open', { graceMs: o.graceMs, connections: connectionsCut });
      server.closeAllConnections();
      if (!(await within(closed, stepMs))) stepsCut.push('http server');
    }
  } finally {
    clearInterval(reap);
  }
  for (const step of o.steps) {
    const done = await within(
      step.run().catch((e: Error) => o.log.warn(`stopping ${step.name} failed`, { error: e.message })),
      stepMs,
    );
    if (!done) {
      stepsCut.push(step.name);
      o.log.warn(`stopping ${step.name} took longer than ${stepMs} ms; left behind`);
    }
  }
  return { drained, connectionsCut, stepsCut, ms: Date.now() - started };
}
