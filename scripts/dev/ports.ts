/**
 * Where the local stack listens, read once from the environment by `npm run dev` and by every CLI
 * that talks to it, so that one setting moves all of them:
 *
 *   PORT                  the stack's origin, http://127.0.0.1:$PORT (default 8787)
 *   STRIPE_EMULATOR_PORT  the Stripe emulator, http://127.0.0.1:$STRIPE_EMULATOR_PORT (default 12111)
 */
import { createServer } from "node:net";

export const DEFAULT_PORT = 8787;
export const DEFAULT_STRIPE_EMULATOR_PORT = 12111;
export const HOST = "127.0.0.1";

type Env = Record<string, string | undefined>;

export class PortSettingError extends Error {}

function portFrom(env: Env, name: "PORT" | "STRIPE_EMULATOR_PORT", fallback: number): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || port < 1 || port > 65535) {
    throw new PortSettingError(`${name} must be a TCP port number (1-65535), got "${env[name]}"`);
  }
  return port;
}

export interface DevPorts {
  port: number;
  stripePort: number;
}

export function devPorts(env: Env): DevPorts {
  return {
    port: portFrom(env, "PORT", DEFAULT_PORT),
    stripePort: portFrom(env, "STRIPE_EMULATOR_PORT", DEFAULT_STRIPE_EMULATOR_PORT),
  };
}

/** The local stack's origin, e.g. http://127.0.0.1:8787. */
export function stackOrigin(env: Env): string {
  return `http://${HOST}:${devPorts(env).port}`;
}

/** The local Stripe emulator's origin, e.g. http://127.0.0.1:12111. */
export function emulatorOrigin(env: Env): string {
  return `http://${HOST}:${devPorts(env).stripePort}`;
}

export class PortBusyError extends Error {}

/**
 * Fails with a message naming the port and the setting that moves it when something already
 * listens there (another `npm run dev`, or any other server, answering or not).
 */
export async function assertPortFree(port: number, setting: "PORT" | "STRIPE_EMULATOR_PORT"): Promise<void> {
  const error = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
    const srv = createServer();
    srv.once("error", (err: NodeJS.ErrnoException) => resolve(err));
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(null)));
  });
  if (error === null) return;
  const what = setting === "PORT" ? "the stack" : "the Stripe emulator";
  const reason =
    error.code === "EADDRINUSE" ? "is already in use" : `cannot be used (${error.code ?? error.message})`;
  const other = port === 65535 ? port - 1 : port + 1;
  throw new PortBusyError(
    `port ${port} (${setting}, ${what}) ${reason}. Stop what listens there ` +
      `(\`lsof -i :${port}\` or \`ss -ltnp 'sport = :${port}'\` shows it), or choose another port: ` +
      `${setting}=${other} npm run dev`,
  );
}
