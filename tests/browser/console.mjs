// The operator console in a real Chromium (docs/dashboard.md#the-operator-console): the
// queues, dead letters filtered by error text, one opened and replayed (its cycle then
// succeeds), a drain with a dry run first then for real, the archive, a merchant
// created with its secret shown once; axe-core on each page; 360 px.
// Run by tests/browser/main.rs.

import assert from "node:assert/strict";
import { env, base, ok, open, accessible, fits, test, run } from "./lib.mjs";

async function waitFor(what, check, timeout = 30000) {
  const until = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function signIn(options = {}) {
  const { page } = await open(options);
  await page.goto(`${base}/console`);
  await page.getByLabel("Admin token").fill(env.adminToken);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Queues" }).waitFor();
  return page;
}

const cycleOne = async (id) => (await ok("GET", `/v1/subscriptions/${id}/billing-cycles`)).data[0];

// Three subscriptions whose card times out at the gateway: their charges end up dead.
const subs = [];
for (const c of ["hal", "ivy", "jon"]) {
  subs.push((await ok("POST", "/v1/subscriptions", {
    customer: { customerAccountId: c }, amount: "7.50", currency: "EUR",
    interval: { unit: "month", count: 1 }, paymentMethod: "pm_sandbox_timeout",
  }, 201)).id);
}
for (const s of subs) await waitFor("the dead letter", async () => (await cycleOne(s))?.status === "error");

test("a wrong admin token is refused", async () => {
  const { page } = await open();
  await page.goto(`${base}/console`);
  assert.match(page.url(), /\/console\/sign-in$/);
  await accessible(page, "console sign-in");
  await page.getByLabel("Admin token").fill("not-the-token");
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/console/sign-in") && r.request().method() === "POST"),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
  assert.equal(answer.status(), 401);
  assert.equal((await page.goto(`${base}/console/dead-letters`)).status(), 200);
  assert.match(page.url(), /\/console\/sign-in$/, "still signed out");
  return page;
});

test("the queues, the workers and the chart, refreshed live", async () => {
  const page = await signIn();
  const dead = page.locator("#queues tr", { hasText: "charge-transaction" }).locator("td").nth(3);
  assert.equal((await dead.textContent()).trim(), "3");
  assert.ok(Number(await page.textContent("#workers")) >= 1, "a worker is alive");
  await page.locator("svg.chart polyline.depth").waitFor({ state: "attached" });
  await accessible(page, "console queues");
  await page.screenshot({ path: `${env.screenshots}/console-queues.png`, fullPage: true });
  // The script refreshes the table in place every 5 seconds (time fast-forwarded).
  await page.clock.install();
  await page.reload();
  await page.clock.fastForward(5000);
  await page.getByText("Refreshed every 5 seconds.").waitFor({ timeout: 8000 });
  await page.setViewportSize({ width: 360, height: 740 });
  await fits(page, "console queues at 360 px");
  return page;
});

test("filter dead letters by error text, open one, replay it: the cycle succeeds", async () => {
  const page = await signIn();
  await page.getByRole("link", { name: "Dead letters" }).click();
  await page.getByLabel("Error contains").fill("no such error");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByText("No dead letter matches.").waitFor();
  await page.getByLabel("Error contains").fill("TIMEOUT");
  await page.getByLabel("Queue").selectOption("charge-transaction");
  await page.getByRole("button", { name: "Filter" }).click();
  assert.equal(await page.locator("#dead-letters tbody tr").count(), 3);
  await accessible(page, "console dead letters");
  await page.screenshot({ path: `${env.screenshots}/console-dead-letters.png`, fullPage: true });

  // Fix hal's card, then replay hal's charge only.
  const txn = (await cycleOne(subs[0])).transactions[0].id;
  await ok("PATCH", `/v1/subscriptions/${subs[0]}`, { paymentMethod: "pm_sandbox_ok" });
  await page.locator("#dead-letters tr", { hasText: txn }).getByRole("link").click();
  await page.getByRole("heading", { name: /Dead letter/ }).waitFor();
  await page.getByText(`"transactionId": "${txn}"`).waitFor();
  await page.getByRole("cell", { name: "created" }).first().waitFor();
  await accessible(page, "console dead letter");
  await page.screenshot({ path: `${env.screenshots}/console-dead-letter.png`, fullPage: true });
  await page.getByRole("button", { name: "Replay this job" }).click();
  await page.getByText("Replayed 1 dead letter(s)").waitFor();
  await waitFor("the replayed charge", async () => (await cycleOne(subs[0])).status === "succeeded");
  const evs = (await ok("GET", `/v1/events?objectId=${txn}&limit=100`)).data;
  assert.ok(evs.some((e) => e.actor === "operator"), JSON.stringify(evs));
  assert.equal(await page.locator("#dead-letters tbody tr").count(), 2);
  return page;
});

test("drain: a dry run first, then for real; the entries are in the archive", async () => {
  const page = await signIn();
  await page.goto(`${base}/console/dead-letters`);
  await page.getByRole("link", { name: "Drain…" }).click();
  await page.locator("#would-drain", { hasText: "2" }).waitFor();
  await accessible(page, "console drain dry run");
  // The dry run removed nothing.
  await page.goto(`${base}/console/dead-letters`);
  assert.equal(await page.locator("#dead-letters tbody tr").count(), 2);
  await page.getByRole("link", { name: "Drain…" }).click();
  await page.getByRole("button", { name: "Drain these 2 dead letter(s)" }).click();
  await page.getByText("Drained 2 dead letter(s) into the archive.").waitFor();
  assert.equal(await page.locator("#archive tbody tr").count(), 2);
  for (const s of subs.slice(1)) {
    const txn = (await cycleOne(s)).transactions[0].id;
    await page.locator("#archive tr", { hasText: txn }).waitFor();
  }
  await accessible(page, "console archive");
  await page.screenshot({ path: `${env.screenshots}/console-archive.png`, fullPage: true });
  await page.goto(`${base}/console/dead-letters`);
  await page.getByText("No dead letter matches.").waitFor();
  return page;
});

test("create a merchant: its secret is shown once, and works", async () => {
  const page = await signIn();
  await page.getByRole("link", { name: "Merchants" }).click();
  await page.getByLabel("Name").fill("Corner shop");
  await page.getByLabel(/Sandbox/).check();
  await page.getByRole("button", { name: "Create merchant" }).click();
  const key = (await page.textContent("#new-key")).trim();
  const secret = (await page.textContent("#new-secret")).trim();
  assert.match(secret, /^sk_[0-9a-f]{64}$/);
  await accessible(page, "console merchant created");
  await page.screenshot({ path: `${env.screenshots}/console-merchants.png`, fullPage: true });
  const res = await fetch(`${base}/v1/plans`, {
    headers: { authorization: "Basic " + Buffer.from(`${key}:${secret}`).toString("base64"), "x-api-key": key },
  });
  assert.equal(res.status, 200, "the shown credentials work");
  await page.goto(`${base}/console/merchants`);
  await page.getByRole("cell", { name: "Corner shop", exact: true }).waitFor();
  assert.ok(!(await page.content()).includes(secret), "never shown again");
  await page.setViewportSize({ width: 360, height: 740 });
  await fits(page, "console merchants at 360 px");
  return page;
});

await run();
