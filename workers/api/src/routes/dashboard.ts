/**
 * The dashboard pages, server-rendered by the api worker with no front-end build:
 * `/` (a user's billing page) and `/admin` (the admin page). Both are static HTML plus one
 * inline script under a per-response CSP nonce; their data comes from the JSON APIs.
 */
import { Hono } from "hono";
import type { ApiEnv } from "../context";
import { adminPage } from "../pages/adminPage";
import { billingPage } from "../pages/billingPage";
import { pageHeaders, servePage } from "../pages/layout";

export const dashboard = new Hono<ApiEnv>();

dashboard.get("/", pageHeaders, (c) => servePage(c, billingPage));

// Registered before the admin API (app.ts), whose key check covers /admin/*: the page itself is
// public and holds no data; the key is typed into it.
dashboard.get("/admin", pageHeaders, (c) => servePage(c, adminPage));
