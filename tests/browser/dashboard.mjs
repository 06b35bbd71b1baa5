// The merchant dashboard in a real Chromium (docs/dashboard.md): signing in and out,
// plans, subscriptions (search, a subscription's cycles, pause, resume, cancel with
// confirmation, manual retry), each checked through the API and its events (actor
// `merchant`); another merchant's ids answer 404; a replayed cookie and a form without
// its CSRF token are refused; axe-core on each page; 360 px; JavaScript off.
// Run by tests/browser/main.rs.

import assert from "node:assert/strict";
import { env, base, ok, admin, open, accessible, fits, test, run } from "./lib.mjs";

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
  const e = (await ok("GET", `/v1/events?objectId=${id}&limit=100`)).data.at(-1);
  return [e.type, e.actor, e.data];
}

const cycleOne = async (id) => (await ok("GET", `/v1/subscriptions/${id}/billing-cycles`)).data[0];

/** Sign in on a fresh page; returns it on the subscriptions page. */
async function signIn(options = {}) {
  const { page } = await open(options);
  await page.goto(`${base}/dashboard`);
  await page.getByLabel("Merchant key").fill(env.key);
  await page.getByLabel("Secret").fill(env.secret);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Subscriptions" }).waitFor();
  return page;
}

// Another merchant, whose objects merchant A must never reach.
const other = await admin("POST", "/admin/merchants", { name: "Other shop", sandbox: true });
const otherAuth = "Basic " + Buffer.from(`${other.merchantKey}:${other.secret}`).toString("base64");
async function asOther(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: otherAuth, "x-api-key": other.merchantKey, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res.json();
}
const otherPlan = await asOther("POST", "/v1/plans", {
  name: "Their plan", amount: "3.00", currency: "EUR", interval: { unit: "month", count: 1 }, status: "active",
});
const otherSub = await asOther("POST", "/v1/subscriptions", {
  customer: { customerAccountId: "their-customer" }, planId: otherPlan.id,
});

test("a wrong secret is refused and shows nothing of the merchant", async () => {
  const { page } = await open();
  const res = await page.goto(`${base}/dashboard/subscriptions`);
  assert.match(page.url(), /\/dashboard\/sign-in$/, "signed out: the sign-in page");
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-security-policy"], /default-src 'none'/);
  await accessible(page, "dashboard sign-in");
  await page.getByLabel("Merchant key").fill(env.key);
  await page.getByLabel("Secret").fill("sk_wrong");
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/dashboard/sign-in") && r.request().method() === "POST"),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
  assert.equal(answer.status(), 401);
  await page.getByRole("alert").getByText("do not match").waitFor();
  const text = await page.textContent("body");
  assert.ok(!text.includes("Test merchant") && !text.includes("Subscriptions"), text);
  assert.deepEqual((await page.context().cookies()).filter((c) => c.name === "recur_dashboard"), []);
  await accessible(page, "dashboard sign-in refused");
  return page;
});

test("create a draft plan with tags, find it by tag, activate it", async () => {
  const page = await signIn();
  const cookie = (await page.context().cookies()).find((c) => c.name === "recur_dashboard");
  assert.ok(cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict", JSON.stringify(cookie));
  assert.ok(cookie.expires - Date.now() / 1000 > 11.9 * 3600 && cookie.expires - Date.now() / 1000 <= 12 * 3600 + 5);
  await page.getByRole("link", { name: "Plans" }).click();
  await page.getByLabel("Name").fill("Gold box");
  await page.getByLabel("Amount").fill("12.5");
  await page.getByLabel("Currency").fill("EUR");
  await page.getByLabel("Tags (comma-separated)").fill("boxes, premium");
  await page.getByRole("button", { name: "Create plan" }).click();
  await page.getByText("The plan is created.").waitFor();
  const plan = (await ok("GET", "/v1/plans?tag=premium")).data[0];
  assert.deepEqual([plan.name, plan.amount, plan.status, plan.tags], ["Gold box", "12.50", "draft", ["boxes", "premium"]]);
  assert.deepEqual((await lastEvent(plan.id)).slice(0, 2), ["created", "merchant"]);
  // A bad amount is refused on the page and creates nothing.
  await page.getByLabel("Name").fill("Broken");
  await page.getByLabel("Amount").fill("1.234");
  await page.getByRole("button", { name: "Create plan" }).click();
  await page.getByRole("alert").getByText("amount").waitFor();
  await accessible(page, "dashboard plans with an error");
  assert.equal((await ok("GET", "/v1/plans?limit=100")).data.filter((p) => p.name === "Broken").length, 0);
  // Filter by tag, then activate.
  await page.goto(`${base}/dashboard/plans`);
  await page.getByLabel("Tag", { exact: true }).fill("premium");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByRole("cell", { name: "Gold box", exact: true }).waitFor();
  assert.equal(await page.locator("#main tbody tr").count(), 1);
  await accessible(page, "dashboard plans");
  await page.screenshot({ path: `${env.screenshots}/dashboard-plans.png`, fullPage: true });
  await page.getByRole("button", { name: "Activate Gold box" }).click();
  await page.getByText("The plan is active.").waitFor();
  assert.equal((await ok("GET", `/v1/plans/${plan.id}`)).status, "active");
  const [type, actor, data] = await lastEvent(plan.id);
  assert.deepEqual([type, actor, data.to], ["status_changed", "merchant", "active"]);
  // Edit: a description and one more tag.
  await page.getByRole("link", { name: "Edit Gold box" }).click();
  await page.getByLabel("Description").fill("A box of gold, monthly");
  await page.getByLabel("Tags (comma-separated)").fill("boxes, premium, gift");
  await accessible(page, "dashboard plan edit");
  await page.getByRole("button", { name: "Save plan" }).click();
  await page.getByText("The plan is saved.").waitFor();
  const edited = await ok("GET", `/v1/plans/${plan.id}`);
  assert.deepEqual([edited.description, edited.tags], ["A box of gold, monthly", ["boxes", "premium", "gift"]]);
  assert.deepEqual((await lastEvent(plan.id)).slice(0, 2), ["updated", "merchant"]);
  return page;
});

test("find a subscription by customer, see cycle 1, pause, resume, cancel at period end", async () => {
  const plan = (await ok("GET", "/v1/plans?tag=premium")).data[0];
  const sub = (await ok("POST", "/v1/subscriptions", {
    customer: { customerAccountId: "dana" }, planId: plan.id, paymentMethod: "pm_sandbox_ok",
  }, 201)).id;
  await ok("POST", "/v1/subscriptions", { customer: { customerAccountId: "erin" }, planId: plan.id }, 201);
  await waitFor("the first charge", async () => (await cycleOne(sub))?.status === "succeeded");

  const page = await signIn();
  await page.getByLabel("Customer account id").fill("dana");
  await page.getByRole("button", { name: "Search" }).click();
  assert.equal(await page.locator("#main tbody tr").count(), 1, "only dana's subscription");
  await accessible(page, "dashboard subscriptions");
  await page.screenshot({ path: `${env.screenshots}/dashboard-subscriptions.png`, fullPage: true });
  await page.getByRole("link", { name: "dana" }).click();
  await page.locator("#cycle-1 .status", { hasText: "succeeded" }).waitFor();
  await page.getByText("€12.50").first().waitFor();
  await page.getByText(/UTC \(/).first().waitFor();
  await accessible(page, "dashboard subscription");
  await page.screenshot({ path: `${env.screenshots}/dashboard-subscription.png`, fullPage: true });

  await page.getByRole("button", { name: "Pause" }).click();
  await page.getByText("The subscription is paused.").waitFor();
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "paused");
  let [type, actor, data] = await lastEvent(sub);
  assert.deepEqual([type, actor, data.to], ["status_changed", "merchant", "paused"]);
  const events = (await ok("GET", `/v1/events?objectId=${sub}&limit=100`)).data;
  assert.equal(events.filter((e) => e.type === "status_changed" && e.data.to === "paused").length, 1, "one event");
  await page.locator("td.actor", { hasText: "merchant" }).first().waitFor();

  await page.getByRole("button", { name: "Resume" }).click();
  await page.getByText("The subscription is active again.").waitFor();
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "active");
  [type, actor, data] = await lastEvent(sub);
  assert.deepEqual([type, actor, data.to], ["status_changed", "merchant", "active"]);

  // Cancelling asks first; "No" changes nothing.
  await page.getByRole("link", { name: "Cancel…" }).click();
  await page.getByRole("heading", { name: "Cancel this subscription?" }).waitFor();
  await accessible(page, "dashboard cancel confirmation");
  await page.getByRole("link", { name: "No, keep the subscription" }).click();
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).cancelAt, null);
  await page.getByRole("link", { name: "Cancel…" }).click();
  await page.getByRole("button", { name: "Yes, cancel at the end of the period" }).click();
  await page.getByText("The subscription will end when the current period ends.").waitFor();
  const after = await ok("GET", `/v1/subscriptions/${sub}`);
  assert.equal(after.status, "active");
  assert.equal(after.cancelAt, after.currentPeriodEnd);
  [type, actor] = await lastEvent(sub);
  assert.deepEqual([type, actor], ["updated", "merchant"]);
  // At 360 px: no horizontal scroll.
  await page.setViewportSize({ width: 360, height: 740 });
  await fits(page, "subscription at 360 px");
  await accessible(page, "dashboard subscription at 360 px");
  await page.screenshot({ path: `${env.screenshots}/dashboard-360.png`, fullPage: true });
  await page.goto(`${base}/dashboard/subscriptions`);
  await fits(page, "subscriptions at 360 px");
  return page;
});

test("manual retry of a failed cycle after the card is fixed", async () => {
  const plan = (await ok("POST", "/v1/plans", {
    name: "Graceful", amount: "5.00", currency: "EUR", interval: { unit: "month", count: 1 },
    status: "active", gracePeriodDays: 7,
  }, 201)).id;
  const sub = (await ok("POST", "/v1/subscriptions", {
    customer: { customerAccountId: "fay" }, planId: plan, paymentMethod: "pm_sandbox_expired_card",
  }, 201)).id;
  await waitFor("the hard decline", async () => (await cycleOne(sub))?.status === "failed");
  await ok("PATCH", `/v1/subscriptions/${sub}`, { paymentMethod: "pm_sandbox_ok" });
  const page = await signIn();
  await page.goto(`${base}/dashboard/subscriptions/${sub}`);
  await page.getByRole("button", { name: "Retry cycle 1 now" }).click();
  await page.getByText("A new attempt to charge the cycle was started.").waitFor();
  await waitFor("the retried charge", async () => (await cycleOne(sub))?.status === "succeeded");
  const cycle = await cycleOne(sub);
  assert.deepEqual(cycle.transactions.map((t) => [t.kind, t.status]), [
    ["scheduled", "declined"], ["manual_retry", "succeeded"],
  ]);
  const created = (await ok("GET", `/v1/events?objectId=${cycle.transactions[1].id}`)).data[0];
  assert.deepEqual([created.type, created.actor], ["created", "merchant"]);
  await page.reload();
  await page.locator("#cycle-1 .status", { hasText: "succeeded" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Retry cycle 1 now" }).count(), 0);
  return page;
});

test("another merchant's ids are not found; its objects are never listed", async () => {
  const page = await signIn();
  for (const path of [`/dashboard/subscriptions/${otherSub.id}`, `/dashboard/subscriptions/${otherSub.id}/cancel`]) {
    const res = await page.goto(base + path);
    assert.equal(res.status(), 404, path);
    assert.ok(!(await page.textContent("body")).includes("their-customer"));
  }
  await accessible(page, "dashboard not found");
  // A real form of this session, pointed at B's plan.
  await page.goto(`${base}/dashboard/plans`);
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(`/dashboard/plans/${otherPlan.id}/archive`)),
    page.evaluate((id) => {
      const f = document.querySelector('form[action$="/archive"]');
      f.action = `/dashboard/plans/${id}/archive`;
      f.submit();
    }, otherPlan.id),
  ]);
  assert.equal(res.status(), 404);
  await page.getByRole("heading", { name: "Not found" }).waitFor();
  assert.equal((await asOther("GET", `/v1/plans/${otherPlan.id}`)).status, "active", "unchanged");
  await page.goto(`${base}/dashboard/subscriptions?customer=their-customer`);
  await page.getByText("No subscription matches.").waitFor();
  return page;
});

test("a form without its CSRF token is refused; a cookie replayed after sign-out opens nothing", async () => {
  const page = await signIn();
  const sub = (await ok("GET", "/v1/subscriptions?customerAccountId=erin")).data[0].id;
  await page.goto(`${base}/dashboard/subscriptions/${sub}`);
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(`/dashboard/subscriptions/${sub}/cancel`)),
    page.evaluate(() => {
      // The confirmation's form, posted without its CSRF field.
      const f = document.createElement("form");
      f.method = "post";
      f.action = window.location.pathname + "/cancel";
      for (const [k, v] of [["confirm", "yes"], ["when", "now"]]) {
        const i = document.createElement("input");
        i.type = "hidden"; i.name = k; i.value = v;
        f.appendChild(i);
      }
      document.body.appendChild(f);
      f.submit();
    }),
  ]);
  assert.equal(res.status(), 403);
  await page.getByRole("heading", { name: "This form has expired" }).waitFor();
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "pending", "unchanged");
  const cookie = (await page.context().cookies()).find((c) => c.name === "recur_dashboard").value;
  await page.goto(`${base}/dashboard/subscriptions`);
  await page.getByRole("button", { name: "Sign out", exact: true }).click();
  await page.getByRole("heading", { name: "Sign in to the dashboard" }).waitFor();
  const replayed = await fetch(`${base}/dashboard/subscriptions`, {
    headers: { cookie: `recur_dashboard=${cookie}` }, redirect: "manual",
  });
  assert.equal(replayed.status, 303);
  assert.equal(replayed.headers.get("location"), "/dashboard/sign-in");
  return page;
});

test("sign out everywhere ends every session of the merchant", async () => {
  const first = await signIn();
  const second = await signIn();
  await second.getByRole("button", { name: "Sign out everywhere" }).click();
  await second.getByRole("heading", { name: "Sign in to the dashboard" }).waitFor();
  await first.reload();
  assert.match(first.url(), /\/dashboard\/sign-in$/);
  await second.context().close();
  return first;
});

test("with JavaScript off: sign in and pause by plain forms", async () => {
  const plan = (await ok("GET", "/v1/plans?tag=premium")).data[0];
  const sub = (await ok("POST", "/v1/subscriptions", {
    customer: { customerAccountId: "gus" }, planId: plan.id, paymentMethod: "pm_sandbox_ok",
  }, 201)).id;
  const page = await signIn({ javaScriptEnabled: false });
  await page.goto(`${base}/dashboard/subscriptions/${sub}`);
  await page.getByRole("button", { name: "Pause" }).click();
  await page.getByText("The subscription is paused.").waitFor();
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "paused");
  // Keyboard: the skip link comes first and leads to the content.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  return page;
});

test("a checkout link, payment series, webhooks and their deliveries, the sandbox ledger", async () => {
  const pending = (await ok("POST", "/v1/subscriptions", {
    customer: { customerAccountId: "hana" }, amount: "4.00", currency: "EUR", interval: { unit: "month", count: 1 },
  }, 201)).id;
  await ok("POST", "/v1/payment-series", {
    customer: { customerAccountId: "hana" }, paymentMethod: "pm_sandbox_ok", currency: "EUR", description: "Top-ups",
  }, 201);
  const page = await signIn();
  // A webhook endpoint first, so the actions below have deliveries.
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByLabel("URL").fill("http://127.0.0.1:9/hooks");
  await page.getByRole("button", { name: "Create endpoint" }).click();
  assert.match((await page.textContent("#endpoint-secret")).trim(), /^whsec_/);
  await accessible(page, "dashboard webhooks");
  const endpoint = (await ok("GET", "/v1/webhook-endpoints")).data[0];
  assert.equal(endpoint.url, "http://127.0.0.1:9/hooks");
  assert.deepEqual((await lastEvent(endpoint.id)).slice(0, 2), ["created", "merchant"]);

  await page.goto(`${base}/dashboard/subscriptions/${pending}`);
  await page.getByRole("button", { name: "Create a checkout link" }).click();
  const url = (await page.textContent("#checkout-url")).trim();
  assert.ok(url.startsWith(`${base}/checkout/`), url);
  await accessible(page, "dashboard checkout link");
  const session = (await ok("GET", `/v1/checkout-sessions?subscriptionId=${pending}`)).data[0];
  assert.deepEqual((await lastEvent(session.id)).slice(0, 2), ["created", "merchant"]);
  const { page: customer } = await open();
  assert.equal((await customer.goto(url)).status(), 200);
  await customer.locator("#number").waitFor();
  await customer.context().close();

  await page.getByRole("link", { name: "Payment series" }).click();
  await page.getByRole("cell", { name: "Top-ups" }).waitFor();
  await accessible(page, "dashboard payment series");

  await page.goto(`${base}/dashboard/webhooks/${endpoint.id}`);
  await page.getByRole("cell", { name: "checkout_session.created" }).waitFor();
  await accessible(page, "dashboard webhook deliveries");
  await page.getByRole("button", { name: "Send again" }).first().click();
  await page.getByText("The delivery will be sent again now.").waitFor();
  assert.deepEqual((await lastEvent(endpoint.id)).slice(0, 2), ["delivery_retried", "merchant"]);

  // Portal settings: what customers may do.
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByLabel("Pause and resume").check();
  await page.getByLabel("Switch plan, to one of:").check();
  await page.getByLabel(/Gold box/).check();
  await accessible(page, "dashboard settings");
  await page.getByRole("button", { name: "Save settings" }).click();
  await page.getByText("The settings are saved.").waitFor();
  const settings = await ok("GET", "/v1/settings");
  const gold = (await ok("GET", "/v1/plans?tag=premium")).data[0].id;
  assert.deepEqual([settings.portal.pause, settings.portal.switchPlan, settings.portal.switchablePlanIds],
    [true, true, [gold]]);
  const me = (await ok("GET", "/v1/events?objectType=settings&limit=100")).data.at(-1);
  assert.deepEqual([me.type, me.actor], ["updated", "merchant"]);

  await page.getByRole("link", { name: "Sandbox ledger" }).click();
  await page.locator("#ledger tbody tr").first().waitFor();
  await page.getByRole("cell", { name: "dana" }).first().waitFor();
  await accessible(page, "dashboard sandbox ledger");
  await page.screenshot({ path: `${env.screenshots}/dashboard-ledger.png`, fullPage: true });
  return page;
});

await run();
