// The customer portal in a real Chromium (docs/pages.md#the-portal): every action done
// by clicking, then checked through the merchant's API and its events (actor
// `customer`); axe-core on each state; 360 px wide. Run by tests/browser/main.rs.

import assert from "node:assert/strict";
import { env, base, ok, open, accessible, fits, test, run } from "./lib.mjs";

async function plan(name, amount) {
  return (
    await ok("POST", "/v1/plans", {
      name, amount, currency: "EUR", interval: { unit: "month", count: 1 }, status: "active",
    }, 201)
  ).id;
}

async function waitFor(what, check, timeout = 20000) {
  const until = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The last event of an object: [type, actor, data]. */
async function lastEvent(id) {
  const events = (await ok("GET", `/v1/events?objectId=${id}&limit=100`)).data;
  const e = events.at(-1);
  return [e.type, e.actor, e.data];
}

const gold = await plan("Gold", "9.99");
const silver = await plan("Silver", "4.99");
await ok("PATCH", "/v1/settings", {
  portal: {
    pause: true, cancel: true, cancelAtPeriodEnd: true, switchPlan: true, switchablePlanIds: [silver],
    updateAuthorizedLimit: true, updatePaymentMethod: true,
  },
});
const subscribe = async (description) =>
  (await ok("POST", "/v1/subscriptions", {
    customer: { customerAccountId: "carol" }, planId: gold, description, paymentMethod: "pm_sandbox_ok",
  }, 201)).id;
const first = await subscribe("Coffee beans");
const second = await subscribe("Tea leaves");
// Both first charges, made by the engine, are in the history.
for (const id of [first, second]) {
  await waitFor("the first charge", async () =>
    (await ok("GET", `/v1/subscriptions/${id}/billing-cycles`)).data[0]?.status === "succeeded");
}
const portalUrl = (await ok("POST", "/v1/customer-sessions", {
  customerAccountId: "carol", returnUrl: `${base}/healthz`,
}, 201)).url;

const section = (page, id) => page.locator(`section[aria-labelledby="s-${id}"]`);

test("the portal shows the subscriptions, their charges, and passes axe at any width", async () => {
  const { page } = await open();
  const res = await page.goto(portalUrl);
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-security-policy"], /frame-ancestors 'none'/);
  for (const text of ["Coffee beans", "Tea leaves", "€9.99 every month", "Charge history", "succeeded"]) {
    await page.getByText(text).first().waitFor();
  }
  await accessible(page, "portal");
  await page.screenshot({ path: `${env.screenshots}/portal.png`, fullPage: true });
  await page.setViewportSize({ width: 360, height: 740 });
  await fits(page, "portal at 360 px");
  await accessible(page, "portal at 360 px");
  return page;
});

test("pause with a resume date, then resume", async () => {
  const { page } = await open();
  await page.goto(portalUrl);
  const s = section(page, first);
  const resumeOn = new Date(Date.now() + 40 * 86400e3).toISOString().slice(0, 10);
  await s.getByLabel("Resume on (optional)").fill(resumeOn);
  await s.getByRole("button", { name: "Pause subscription" }).click();
  await page.getByText("Your subscription is paused.").waitFor();
  await accessible(page, "portal after an action");
  let sub = await ok("GET", `/v1/subscriptions/${first}`);
  assert.equal(sub.status, "paused");
  assert.equal(sub.resumeAt, `${resumeOn}T00:00:00Z`);
  let [type, actor, data] = await lastEvent(first);
  assert.deepEqual([type, actor, data.to], ["status_changed", "customer", "paused"]);

  await section(page, first).getByRole("button", { name: "Resume subscription" }).click();
  await page.getByText("Your subscription is active again.").waitFor();
  sub = await ok("GET", `/v1/subscriptions/${first}`);
  assert.equal(sub.status, "active");
  [type, actor, data] = await lastEvent(first);
  assert.deepEqual([type, actor, data.to], ["status_changed", "customer", "active"]);
  return page;
});

test("change the authorized limit", async () => {
  const { page } = await open();
  await page.goto(portalUrl);
  const s = section(page, first);
  await s.getByLabel(/Authorized limit per charge/).fill("20.00");
  await s.getByRole("button", { name: "Save limit" }).click();
  await page.getByText("Your authorized limit is saved.").waitFor();
  assert.equal((await ok("GET", `/v1/subscriptions/${first}`)).authorizedLimit, "20.00");
  const [type, actor, data] = await lastEvent(first);
  assert.deepEqual([type, actor, data.authorizedLimit], ["updated", "customer", "20"]);
  // A bad amount is refused on the page, and nothing changes.
  await section(page, first).getByLabel(/Authorized limit per charge/).fill("1.234");
  await section(page, first).getByRole("button", { name: "Save limit" }).click();
  await page.getByRole("alert").getByText("The authorized limit").waitFor();
  await accessible(page, "portal with an error");
  assert.equal((await ok("GET", `/v1/subscriptions/${first}`)).authorizedLimit, "20.00");
  return page;
});

test("replace the card through the checkout form", async () => {
  const { page } = await open();
  await page.goto(portalUrl);
  await section(page, first).getByRole("button", { name: "Replace card" }).click();
  await page.locator("#number").waitFor();
  await page.fill("#name", "Carol");
  await page.fill("#number", "4000000000000002");
  await page.fill("#expiry", "10/31");
  await page.fill("#cvc", "321");
  await page.click("button[type=submit]");
  await page.getByText("Your new card is saved.").waitFor({ timeout: 20000 });
  await page.getByText("Visa ending in 0002").first().waitFor();
  const sub = await ok("GET", `/v1/subscriptions/${first}`);
  assert.equal(sub.paymentMethod, "pm_sandbox_do_not_honor");
  assert.deepEqual(sub.paymentMethodDetails, { brand: "visa", last4: "0002", expMonth: 10, expYear: 2031 });
  const [type, actor] = await lastEvent(first);
  assert.deepEqual([type, actor], ["updated", "customer"]);
  return page;
});

test("cancel at the end of the period, with a reason", async () => {
  const { page } = await open();
  await page.goto(portalUrl);
  const s = section(page, second);
  await s.getByLabel("Why are you cancelling?").selectOption("too_expensive");
  await s.getByRole("button", { name: "Cancel at the end of the period" }).click();
  await page.getByText("Your subscription will end when the current period ends.").waitFor();
  const sub = await ok("GET", `/v1/subscriptions/${second}`);
  assert.equal(sub.status, "active");
  assert.equal(sub.cancelAt, sub.currentPeriodEnd);
  const [type, actor, data] = await lastEvent(second);
  assert.deepEqual([type, actor, data.reason], ["updated", "customer", "too_expensive"]);
  return page;
});

test("switch plan: a new subscription from the end of the period", async () => {
  const { page } = await open();
  await page.goto(portalUrl);
  const s = section(page, first);
  await s.getByLabel("Switch to").selectOption(silver);
  await s.getByRole("button", { name: "Switch plan" }).click();
  await page.getByText("Your new plan starts when the current period ends.").waitFor();
  const old = await ok("GET", `/v1/subscriptions/${first}`);
  assert.equal(old.cancelAt, old.currentPeriodEnd);
  const subs = (await ok("GET", `/v1/subscriptions?customerAccountId=carol&planId=${silver}`)).data;
  assert.equal(subs.length, 1);
  assert.equal(subs[0].startAt, old.currentPeriodEnd);
  assert.equal(subs[0].paymentMethod, old.paymentMethod);
  assert.equal(subs[0].metadata.switchedFrom, first);
  const events = (await ok("GET", `/v1/events?objectId=${subs[0].id}`)).data;
  assert.deepEqual([events[0].type, events[0].actor], ["created", "customer"]);
  // The new subscription is on the page too.
  await page.getByText("€4.99 every month").first().waitFor();
  return page;
});

test("an action the merchant disables is no longer offered", async () => {
  await ok("PATCH", "/v1/settings", { portal: { pause: false, updatePaymentMethod: false } });
  const { page } = await open();
  await page.goto(portalUrl);
  await page.getByRole("heading", { name: "Tea leaves" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Pause subscription" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Replace card" }).count(), 0);
  assert.ok((await page.getByRole("button", { name: "Save limit" }).count()) > 0);
  return page;
});

await run();
