// Shared by the browser test scripts (run by tests/browser/main.rs): the merchant's API,
// a browser per script, a fresh context per test, axe-core and the runner.

import { createRequire } from "node:module";
import { readFileSync, mkdirSync } from "node:fs";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
export const env = JSON.parse(process.env.RECUR_BROWSER);
export const { base } = env;
mkdirSync(env.screenshots, { recursive: true });

// ---- the merchant's side: the API ----------------------------------------------

const auth = "Basic " + Buffer.from(`${env.key}:${env.secret}`).toString("base64");

export async function api(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: auth, "x-api-key": env.key, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

export async function ok(method, path, body, status = 200) {
  const r = await api(method, path, body);
  assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function admin(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${env.adminToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status}`);
  return res.json();
}

export const browser = await chromium.launch({ executablePath: env.chromium, args: ["--no-sandbox"] });

/** A fresh context and page; console errors and page errors fail the test. */
export async function open(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1024, height: 800 }, ...options });
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push(`page error: ${e.message}`));
  // A page answering 4xx is logged by Chromium as a failed load: pages are checked by
  // their status instead. Any other console error (a CSP violation, a script error)
  // and any failed subresource (stylesheet, script, poll) is a problem.
  page.on("console", (m) => {
    const loadFailure = m.text().startsWith("Failed to load resource: the server responded");
    if (m.type() === "error" && !loadFailure && !page.expectErrors) page.problems.push(`console: ${m.text()}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && r.request().resourceType() !== "document") {
      page.problems.push(`${r.status()} for ${r.request().resourceType()} ${r.url()}`);
    }
  });
  return { context, page };
}

/** axe-core on the current page: no violation of any impact. */
export async function accessible(page, what) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }),
  );
  const found = result.violations.map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.length})`);
  assert.deepEqual(found, [], `axe on ${what}`);
  axeChecked.push(what);
}

/** No horizontal scroll at the current viewport. */
export async function fits(page, what) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  const widest = scroll <= width ? [] : await page.evaluate((w) =>
    [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > w && !e.closest(".table"))
      .slice(0, 5)
      .map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className} ${Math.round(e.getBoundingClientRect().right)}px`),
  width);
  assert.ok(scroll <= width, `${what}: ${scroll}px wide in a ${width}px viewport (${widest.join(", ")})`);
}

export const axeChecked = [];
const tests = [];
export const test = (name, fn) => tests.push({ name, fn });

/** Run the tests in order, print TAP-like lines, exit 1 on any failure. */
export async function run() {
  const results = [];
  const started = Date.now();
  for (const t of tests) {
    const t0 = Date.now();
    try {
      const page = await t.fn();
      assert.deepEqual(page.problems, [], "console or page errors");
      await page.context().close();
      results.push(`ok - ${t.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      results.push(`not ok - ${t.name}\n  ${String(e.stack || e).split("\n").join("\n  ")}`);
    }
  }
  await browser.close();
  console.log(results.join("\n"));
  console.log(`axe-core found no violation on: ${axeChecked.join("; ")}`);
  console.log(`${tests.length} tests in ${Date.now() - started} ms`);
  process.exit(results.some((r) => r.startsWith("not ok")) ? 1 : 0);
}
