// The operator console in a real Chromium (docs/dashboard.md#the-operator-console): the
// queues with their depth and throughput charts, dead letters filtered by error text,
// one opened and replayed (its cycle then succeeds), a drain with a dry run first then
// for real, the archive, a merchant created with its secret shown once, two selected
// dead letters replayed and then all those matching an error text (without
// JavaScript); axe-core on each page; 360 px.
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
  // Throughput a queue, in the chart's table: every queue has its row.
  assert.equal(await page.locator("#throughput tbody tr").count(), 6);
  await page.locator("#throughput tr", { hasText: "charge-transaction" }).waitFor();
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

/** The row of the dead letter of `sub`'s first charge on the list. */
const row = async (page, sub) => page.locator("#dead-letters tr", { hasText: (await cycleOne(sub)).transactions[0].id });

/** Subscriptions whose first charge dies: `card` fails every attempt (a flaky card that
 * recovers is tried again with a new subscription until one dies). */
async function deadCharge(customer, card) {
  for (let i = 0; ; i++) {
    const id = (await ok("POST", "/v1/subscriptions", {
      customer: { customerAccountId: `${customer}-${i}` }, amount: "4.20", currency: "EUR",
      interval: { unit: "month", count: 1 }, paymentMethod: card,
    }, 201)).id;
    const status = await waitFor("the charge's end", async () => {
      const s = (await cycleOne(id))?.status;
      return ["error", "succeeded"].includes(s) && s;
    });
    if (status === "error") return id;
  }
}

test("replay the selected dead letters, then all those matching an error text (without JavaScript)", async () => {
  const timeouts = [];
  for (const c of ["kai", "lea", "max"]) timeouts.push(await deadCharge(c, "pm_sandbox_timeout"));
  const unavailable = [await deadCharge("ned", "pm_sandbox_flaky_99"), await deadCharge("oda", "pm_sandbox_flaky_99")];
  const page = await signIn();
  await page.goto(`${base}/console/dead-letters`);
  assert.equal(await page.locator("#dead-letters tbody tr").count(), 5);

  // Two selected by their checkboxes (their cards fixed first): exactly those two go.
  for (const s of timeouts.slice(0, 2)) {
    await ok("PATCH", `/v1/subscriptions/${s}`, { paymentMethod: "pm_sandbox_ok" });
    await (await row(page, s)).getByRole("checkbox").check();
  }
  await page.getByRole("button", { name: "Replay the selected" }).click();
  await page.getByText("Replayed 2 dead letter(s); 0 superseded by a later attempt.").waitFor();
  assert.equal(await page.locator("#dead-letters tbody tr").count(), 3);
  for (const s of timeouts.slice(0, 2)) {
    await waitFor("the replayed charge", async () => (await cycleOne(s)).status === "succeeded");
    assert.equal(await (await row(page, s)).count(), 0);
  }
  await (await row(page, timeouts[2])).waitFor();
  await page.screenshot({ path: `${env.screenshots}/console-replayed.png`, fullPage: true });

  // Every dead letter whose error says 503, by plain forms: the timeout stays.
  await page.goto(`${base}/console/dead-letters?error=simulated+503`);
  assert.equal(await page.locator("#dead-letters tbody tr").count(), 2);
  await accessible(page, "console dead letters filtered by an error text");
  const plain = await signIn({ javaScriptEnabled: false });
  for (const s of unavailable) await ok("PATCH", `/v1/subscriptions/${s}`, { paymentMethod: "pm_sandbox_ok" });
  await plain.goto(`${base}/console/dead-letters`);
  await plain.getByLabel("Error contains").fill("simulated 503");
  await plain.getByRole("button", { name: "Filter" }).click();
  assert.equal(await plain.locator("#dead-letters tbody tr").count(), 2);
  await plain.getByRole("button", { name: "Replay all matching" }).click();
  await plain.getByText("Replayed 2 dead letter(s); 0 superseded by a later attempt.").waitFor();
  for (const s of unavailable) {
    await waitFor("the replayed charge", async () => (await cycleOne(s)).status === "succeeded");
  }
  await plain.goto(`${base}/console/dead-letters`);
  assert.equal(await plain.locator("#dead-letters tbody tr").count(), 1, "only the timeout is left");
  await (await row(plain, timeouts[2])).waitFor();
  assert.equal((await cycleOne(timeouts[2])).status, "error");
  const evs = (await ok("GET", `/v1/events?objectId=${(await cycleOne(unavailable[0])).transactions[0].id}&limit=100`)).data;
  assert.ok(evs.some((e) => e.actor === "operator"), JSON.stringify(evs));
  await plain.context().close();

  // The throughput chart counted the replayed charges.
  await page.goto(`${base}/console`);
  const done = page.locator("#throughput tr", { hasText: "charge-transaction" }).locator("td").nth(2);
  assert.ok(Number(await done.textContent()) >= 1, `charges completed: ${await done.textContent()}`);
  await accessible(page, "console queues with throughput");
  await page.screenshot({ path: `${env.screenshots}/console-throughput.png`, fullPage: true });
  return page;
});

await run();
