/**
 * The HTML shell of the dashboard pages, rendered with hono/html (every interpolation escaped),
 * with no external assets: one inline <style> and one inline <script>, both allowed by the
 * response's CSP nonce. The script is layout.browser.js (helpers every page uses) followed by
 * the page's own browser script; both are plain script files imported as text (wrangler `rules`).
 */
import type { Context } from "hono";
import { html, raw } from "hono/html";
import { NONCE, secureHeaders } from "hono/secure-headers";
import helpers from "./layout.browser.js";

/** Markup built with `html`: escaped already, safe to interpolate into more `html`. */
export type Html = ReturnType<typeof html>;

/**
 * The security headers of the dashboard pages: a strict Content-Security-Policy whose only
 * script and style are the ones carrying this response's nonce, no framing, no referrer.
 */
export const pageHeaders = secureHeaders({
  contentSecurityPolicy: {
    defaultSrc: ["'none'"],
    scriptSrc: [NONCE],
    styleSrc: [NONCE],
    connectSrc: ["'self'"],
    imgSrc: ["'self'", "data:"],
    baseUri: ["'none'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
  },
  xFrameOptions: "DENY",
  // HTTPS policy belongs to the deployment's domain, not to two pages of one worker
  strictTransportSecurity: false,
});

const CSS = `
:root { color-scheme: light; --fg: #111827; --muted: #4b5563; --bg: #ffffff; --line: #d1d5db;
  --accent: #1d4ed8; --accent-fg: #ffffff; --warn-bg: #fef3c7; --warn-fg: #78350f; --warn-line: #b45309;
  --bad: #b45309; --ok: #1d4ed8; --focus: #9a3412; --panel: #f9fafb; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
.skip { position: absolute; left: -999px; top: 0; background: var(--bg); padding: .5rem; }
.skip:focus { left: .5rem; }
header, main, footer { max-width: 60rem; margin: 0 auto; padding: 0 1rem; }
header { display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between; gap: .5rem;
  border-bottom: 1px solid var(--line); }
h1 { font-size: 1.5rem; margin: 1rem 0 .75rem; }
h2 { font-size: 1.2rem; margin: 1.75rem 0 .5rem; }
section { margin-bottom: 1rem; }
p { margin: .4rem 0; }
.muted { color: var(--muted); }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; }
button, .button { font: inherit; min-height: 44px; padding: .5rem 1rem; border-radius: .375rem; cursor: pointer;
  border: 1px solid var(--accent); background: var(--accent); color: var(--accent-fg); }
button.secondary { background: var(--bg); color: var(--accent); }
button[disabled] { opacity: .6; cursor: progress; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
input, select, textarea { font: inherit; padding: .5rem; border: 1px solid #6b7280; border-radius: .375rem;
  max-width: 100%; min-height: 44px; }
textarea { width: 100%; min-height: 6rem; font-family: ui-monospace, monospace; font-size: .85rem; }
label { font-weight: 600; display: block; margin-bottom: .25rem; }
form .row { display: flex; flex-wrap: wrap; gap: .5rem; align-items: flex-end; margin-bottom: .5rem; }
form .row > div { flex: 1 1 12rem; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; margin: .75rem 0; }
.banner { border: 2px solid var(--warn-line); background: var(--warn-bg); color: var(--warn-fg);
  border-radius: .5rem; padding: .75rem 1rem; margin: 1rem 0; }
.banner p { margin: 0 0 .5rem; }
.notice:empty { display: none; }
.notice { border-left: 4px solid var(--accent); background: var(--panel); padding: .5rem .75rem; margin: 1rem 0; }
.notice.error { border-left-color: var(--warn-line); }
.count { font-size: 1.75rem; font-weight: 700; margin: .25rem 0; }
progress { width: 100%; height: 1rem; accent-color: var(--accent); }
.cards { list-style: none; padding: 0; margin: 0; display: grid; grid-template-columns: repeat(auto-fit, minmax(15rem, 1fr)); gap: .75rem; }
.card { border: 1px solid var(--line); border-radius: .5rem; padding: .75rem 1rem; background: var(--panel); }
.card h3 { margin: 0 0 .25rem; font-size: 1.05rem; }
.card .current { font-weight: 700; color: var(--accent); }
.table-wrap { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; font-size: .95rem; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, monospace; font-size: .85rem; overflow-wrap: anywhere; }
.not-charged { color: var(--warn-fg); font-weight: 600; }
.chart svg { width: 100%; height: auto; display: block; }
.legend { display: flex; flex-wrap: wrap; gap: 1rem; font-size: .9rem; margin: .25rem 0; }
.swatch { display: inline-block; width: .9rem; height: .9rem; vertical-align: middle; margin-right: .3rem;
  border-radius: 2px; }
.swatch.ok { background: var(--ok); }
.swatch.bad { background: var(--bad); }
dl.metrics { display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: .75rem; margin: .5rem 0; }
dl.metrics div { border: 1px solid var(--line); border-radius: .5rem; padding: .5rem .75rem; background: var(--panel); }
dl.metrics dt { font-size: .85rem; color: var(--muted); }
dl.metrics dd { margin: 0; font-size: 1.3rem; font-weight: 700; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--panel); padding: .5rem;
  border: 1px solid var(--line); border-radius: .375rem; font-size: .8rem; max-height: 20rem; overflow: auto; }
[hidden] { display: none !important; }
@media (max-width: 40rem) {
  th, td { padding: .35rem .3rem; font-size: .9rem; }
  .hide-narrow { display: none; }
}
`;

export interface PageOptions {
  title: string;
  nonce: string;
  body: Html;
  header?: Html;
  /** The page's browser script (a trusted file of this worker, run after layout.browser.js). */
  script: string;
}

export function renderPage(o: PageOptions): Html {
  const script = `${helpers}\n${o.script}`;
  if (script.includes("</script")) throw new Error("an inline script must not contain </script");
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${o.title}</title>
<link rel="icon" href="data:,">
<style nonce="${o.nonce}">${raw(CSS)}</style>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><h1>${o.title}</h1>${o.header ?? ""}</header>
<main id="main" tabindex="-1">
${o.body}
</main>
<script nonce="${o.nonce}">${raw(script)}</script>
</body>
</html>`;
}

/**
 * Serves a dashboard page rendered with the nonce `pageHeaders` put in this response's CSP.
 * Use behind `pageHeaders`.
 */
export function servePage(c: Context, render: (nonce: string) => Html): Response | Promise<Response> {
  const nonce = c.get("secureHeadersNonce");
  if (!nonce) throw new Error("servePage needs the pageHeaders middleware before it");
  c.header("cache-control", "no-store");
  return c.html(render(nonce), 200, { "Content-Type": "text/html; charset=utf-8" });
}
