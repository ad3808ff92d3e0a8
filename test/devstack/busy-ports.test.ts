/**
 * `npm run dev` on a port that is already taken fails at once, naming the port and the setting
 * that moves it, whether the other server answers HTTP, answers nothing, or holds the
 * emulator's port; it never reports the stack up while another server answers in its place.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freePort, npmDone, portClosed, ROOT } from "./processes";

const servers: Server[] = [];
const sockets: Socket[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function listen<T extends Server>(server: T, port: number): Promise<T> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

/** An HTTP server that answers 200 with JSON to everything, /healthz included. */
const answeringServer = () =>
  createHttpServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true,"stack":"someone else"}');
  });

/** A listener that accepts connections and never says a word. */
const silentServer = () =>
  createNetServer((socket) => {
    sockets.push(socket);
  });

async function dev(port: number, stripePort: number) {
  const persistTo = mkdtempSync(path.join(os.tmpdir(), "aigate-devstack-busy-"));
  dirs.push(persistTo, path.join(ROOT, ".wrangler/dev", String(port)));
  const started = Date.now();
  const run = await npmDone(
    ["run", "dev", "--", "--persist-to", persistTo],
    { PORT: String(port), STRIPE_EMULATOR_PORT: String(stripePort) },
    45_000,
  );
  return { ...run, seconds: (Date.now() - started) / 1000 };
}

describe("npm run dev on a busy port", () => {
  it("fails at once, naming the port and PORT, when another HTTP server answers there", async () => {
    const port = await freePort();
    const stripePort = await freePort();
    await listen(answeringServer(), port);
    const run = await dev(port, stripePort);
    expect(run.timedOut, run.output).toBe(false);
    expect(run.output).not.toContain("is up on");
    expect(run.code, run.output).toBe(1);
    expect(run.output).toContain(`port ${port} (PORT, the stack) is already in use`);
    expect(run.output).toContain(`PORT=${port + 1} npm run dev`);
    expect(run.seconds).toBeLessThan(15);
    // nothing was left behind on the emulator's port
    expect(await portClosed(stripePort)).toBe(true);
  });

  it("fails at once when the port is held by a listener that never answers", async () => {
    const port = await freePort();
    const stripePort = await freePort();
    await listen(silentServer(), port);
    const run = await dev(port, stripePort);
    expect(run.timedOut, run.output).toBe(false);
    expect(run.code, run.output).toBe(1);
    expect(run.output).toContain(`port ${port} (PORT, the stack) is already in use`);
    expect(run.seconds).toBeLessThan(15);
  });

  it("fails at once, naming STRIPE_EMULATOR_PORT, when the emulator's port is taken", async () => {
    const port = await freePort();
    const stripePort = await freePort();
    await listen(answeringServer(), stripePort);
    const run = await dev(port, stripePort);
    expect(run.timedOut, run.output).toBe(false);
    expect(run.code, run.output).toBe(1);
    expect(run.output).toContain(
      `port ${stripePort} (STRIPE_EMULATOR_PORT, the Stripe emulator) is already in use`,
    );
    expect(run.output).toContain(`STRIPE_EMULATOR_PORT=${stripePort + 1} npm run dev`);
    expect(run.seconds).toBeLessThan(15);
    expect(await portClosed(port)).toBe(true);
  });

  it("refuses a PORT that is not a port number", async () => {
    const run = await npmDone(["run", "dev"], {
      PORT: "80a",
      STRIPE_EMULATOR_PORT: String(await freePort()),
    });
    expect(run.code, run.output).toBe(1);
    expect(run.output).toContain('PORT must be a TCP port number (1-65535), got "80a"');
  });
});
