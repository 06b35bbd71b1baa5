// The merchant dashboard in a real Chromium (docs/dashboard.md): signing in and out,
// plans, subscriptions (created by the form, search, a subscription's cycles, pause, resume, cancel with
// confirmation, manual retry), payment series (payments, cancel with confirmation),
// webhook endpoints (edit, delete with confirmation), the sandbox merchant's test
// clocks (a subscription on one charged, the clock advanced a month by the form),
// each checked through the API and its events (actor `merchant`); another merchant's
// ids answer 404; a live merchant has no test clocks; a replayed cookie and a form
// without its CSRF token are refused; axe-core on each page; 360 px; JavaScript off.
// Run by tests/browser/main.rs.

import assert from "node:assert/strict";
import { env, base, api, ok, admin, open, accessible, fits, test, run } from "./lib.mjs";

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

/** Sign in on a fresh page (as the test's merchant, or `as`); returns it on the subscriptions page. */
async function signIn(options = {}, as = { key: env.key, secret: env.secret }) {
  const { page } = await open(options);
  await page.goto(`${base}/dashboard`);
  await page.getByLabel("Merchant key").fill(as.key);
  await page.getByLabel("Secret").fill(as.secret);
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

/** The fields of the page's form `selector`, as the browser would post them. */
const formFields = (page, selector) =>
  page.locator(selector).evaluate((f) => [...new FormData(f)].map(([k, v]) => [k, String(v)]));

/** The same form posted again outside the browser, with the page's cookies: its answer. */
async function postAgain(page, path, fields) {
  const cookie = (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
  return fetch(base + path, {
    method: "POST",
    headers: { cookie, origin: base, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
    redirect: "manual",
  });
}

test("create a subscription by the form, find it by customer, see cycle 1, pause, resume, cancel at period end", async () => {
  const plan = (await ok("GET", "/v1/plans?tag=premium")).data[0];
  await ok("POST", "/v1/subscriptions", { customer: { customerAccountId: "erin" }, planId: plan.id }, 201);
  const page = await signIn();
  await page.getByRole("link", { name: "New subscription" }).click();
  await page.getByRole("heading", { name: "New subscription" }).waitFor();
  await accessible(page, "dashboard new subscription");
  await page.getByLabel("Plan").selectOption(plan.id);
  await page.getByLabel("Payment method token (optional)").fill("pm_sandbox_ok");
  // Without the customer's account id: refused on the form, naming the field; nothing stored.
  // (The field's `required` stops a browser from sending it; the server refuses it all the same.)
  const count = async () => (await ok("GET", "/v1/subscriptions?limit=100")).data.length;
  const before = await count();
  await page.getByLabel("Customer account id").evaluate((e) => e.removeAttribute("required"));
  const create = page.getByRole("button", { name: "Create subscription" });
  assert.equal(await submitted(page, create, "/dashboard/subscriptions/new"), 422);
  await page.getByRole("alert").getByText("customer.customerAccountId: is required").waitFor();
  assert.equal(await page.getByLabel("Payment method token (optional)").inputValue(), "pm_sandbox_ok", "kept");
  assert.equal(await count(), before, "nothing created");
  await accessible(page, "dashboard new subscription with an error");
  await page.getByLabel("Customer account id").fill("dana");
  await page.getByLabel("Customer email (optional)").fill("dana@example.com");
  await page.screenshot({ path: `${env.screenshots}/dashboard-new-subscription.png`, fullPage: true });
  const fields = await formFields(page, "form[action='/dashboard/subscriptions/new']");
  await create.click();
  await page.getByText("Subscription created.").waitFor();
  const sub = page.url().match(/\/dashboard\/subscriptions\/([0-9a-f-]{36})\?done=created$/)[1];
  const made = await ok("GET", `/v1/subscriptions/${sub}`);
  assert.deepEqual([made.customer.customerAccountId, made.planId, made.paymentMethod], ["dana", plan.id, "pm_sandbox_ok"]);
  await waitFor("the first charge", async () => (await cycleOne(sub))?.status === "succeeded");
  const created = (await ok("GET", `/v1/events?objectId=${sub}&limit=100`)).data.filter((e) => e.type === "created");
  assert.deepEqual(created.map((e) => e.actor), ["merchant"], "one created event, by the merchant");
  // The same form submitted twice more (a double click, a resent POST): the same subscription, no other.
  const again = await Promise.all([1, 2].map(() => postAgain(page, "/dashboard/subscriptions/new", fields)));
  assert.deepEqual(again.map((r) => [r.status, r.headers.get("location")]),
    [1, 2].map(() => [303, `/dashboard/subscriptions/${sub}?done=created`]));
  assert.equal((await ok("GET", "/v1/subscriptions?customerAccountId=dana")).data.length, 1, "one subscription");
  assert.equal(await count(), before + 1);

  await page.goto(`${base}/dashboard/subscriptions`);
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
  await page.goto(`${base}/dashboard/subscriptions/new`);
  await fits(page, "new subscription at 360 px");
  await accessible(page, "dashboard new subscription at 360 px");
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

test("with JavaScript off: sign in, pause and create a subscription by plain forms (sent with Enter)", async () => {
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
  // A new subscription by the plain form, sent with Enter.
  await page.goto(`${base}/dashboard/subscriptions/new`);
  await page.getByLabel("Plan").selectOption(plan.id);
  await page.getByLabel("Customer account id").fill("hal");
  await page.getByLabel("Customer account id").press("Enter");
  await page.getByText("Subscription created.").waitFor();
  const hal = (await ok("GET", "/v1/subscriptions?customerAccountId=hal")).data;
  assert.deepEqual(hal.map((x) => [x.planId, x.status, x.paymentMethod]), [[plan.id, "pending", null]], "waits for a card");
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

/** The billing cycle `n` of a subscription, through the API. */
const cycle = async (id, n) => (await ok("GET", `/v1/subscriptions/${id}/billing-cycles`)).data.find((c) => c.sequence === n);

/** Submit the focused page's form and wait for its answer: the answer's status. */
async function submitted(page, button, path) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(path) && r.request().method() === "POST"),
    button.click(),
  ]);
  return res.status();
}

test("a sandbox merchant's test clock: a subscription on it charges, the form advances it a month", async () => {
  const page = await signIn();
  await page.getByRole("link", { name: "Test clocks" }).click();
  await page.getByRole("heading", { name: "Test clocks", exact: true }).waitFor();
  await page.getByText("No test clock yet.").waitFor();
  await accessible(page, "dashboard test clocks");
  // A time that is not one is refused on the form, naming the field.
  await page.getByLabel("Name (optional)").fill("Renewals");
  await page.getByLabel("Starts at (UTC)").evaluate((e) => { e.type = "text"; e.value = "next tuesday"; });
  assert.equal(await submitted(page, page.getByRole("button", { name: "Create test clock" }), "/dashboard/test-clocks"), 422);
  await page.getByRole("alert").getByText("frozenTime:").waitFor();
  assert.deepEqual((await ok("GET", "/v1/test-clocks")).data, [], "nothing created");
  await page.getByLabel("Starts at (UTC)").evaluate((e) => { e.type = "datetime-local"; });
  await page.getByLabel("Starts at (UTC)").fill("2030-01-15T10:00");
  await page.getByRole("button", { name: "Create test clock" }).click();
  await page.getByText("The test clock is created.").waitFor();
  const clock = (await ok("GET", "/v1/test-clocks")).data.find((c) => c.name === "Renewals");
  assert.equal(clock.frozenTime, "2030-01-15T10:00:00Z");
  await page.locator("#frozen-time", { hasText: "2030-01-15 10:00 UTC" }).waitFor();

  // A subscription on the clock, by the form: due at the clock's time, charged at once.
  const plan = (await ok("GET", "/v1/plans?tag=premium")).data[0];
  await page.goto(`${base}/dashboard/subscriptions/new`);
  await page.getByLabel("Customer account id").fill("otto");
  await page.getByLabel("Plan").selectOption(plan.id);
  await page.getByLabel("Payment method token (optional)").fill("pm_sandbox_ok");
  await page.getByLabel("Test clock").selectOption(clock.id);
  await page.getByRole("button", { name: "Create subscription" }).click();
  await page.getByText("Subscription created.").waitFor();
  const sub = page.url().match(/\/dashboard\/subscriptions\/([0-9a-f-]{36})\?/)[1];
  const made = await ok("GET", `/v1/subscriptions/${sub}`);
  assert.deepEqual([made.customer.customerAccountId, made.planId, made.testClockId, made.startAt],
    ["otto", plan.id, clock.id, "2030-01-15T10:00:00Z"]);
  await waitFor("cycle 1 on the clock", async () => (await cycle(sub, 1))?.status === "succeeded");
  await page.goto(`${base}/dashboard/test-clocks/${clock.id}`);
  await page.getByRole("link", { name: "otto" }).waitFor();
  await accessible(page, "dashboard test clock");

  // Backwards is refused on the form (409), naming the field; the clock stays.
  // (The field's `min` stops a browser from sending it; the server refuses it all the same.)
  await page.getByLabel("Advance to (UTC)").evaluate((e) => e.removeAttribute("min"));
  await page.getByLabel("Advance to (UTC)").fill("2030-01-01T00:00");
  const advance = page.getByRole("button", { name: "Advance the clock" });
  assert.equal(await submitted(page, advance, `/dashboard/test-clocks/${clock.id}/advance`), 409);
  await page.getByRole("alert").getByText("to: a test clock only moves forward").waitFor();
  await accessible(page, "dashboard test clock refused");
  assert.equal((await ok("GET", `/v1/test-clocks/${clock.id}`)).frozenTime, "2030-01-15T10:00:00Z");

  // A month on: cycle 2 falls due and is charged, once.
  await page.getByLabel("Advance to (UTC)").fill("2030-02-15T10:01");
  await page.getByRole("button", { name: "Advance the clock" }).click();
  await page.getByText("The test clock moved").waitFor();
  assert.equal((await ok("GET", `/v1/test-clocks/${clock.id}`)).frozenTime, "2030-02-15T10:01:00Z");
  await waitFor("cycle 2 on the clock", async () => (await cycle(sub, 2))?.status === "succeeded");
  const cycles = (await ok("GET", `/v1/subscriptions/${sub}/billing-cycles`)).data;
  assert.deepEqual(cycles.map((c) => [c.sequence, c.status]).sort(), [[1, "succeeded"], [2, "succeeded"]]);
  await page.screenshot({ path: `${env.screenshots}/dashboard-test-clock.png`, fullPage: true });
  await page.getByRole("link", { name: "otto" }).click();
  await page.locator("#cycle-2 .status", { hasText: "succeeded" }).waitFor();
  await page.getByRole("link", { name: /^at 2030-02-15 10:01 UTC/ }).waitFor();
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto(`${base}/dashboard/test-clocks/${clock.id}`);
  await fits(page, "test clock at 360 px");
  return page;
});

test("a live merchant has no test clocks", async () => {
  const live = await admin("POST", "/admin/merchants", { name: "Live shop", sandbox: false });
  const page = await signIn({}, { key: live.merchantKey, secret: live.secret });
  assert.equal(await page.getByRole("link", { name: "Test clocks" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Sandbox ledger" }).count(), 0);
  const clock = (await ok("GET", "/v1/test-clocks")).data[0];
  for (const path of ["/dashboard/test-clocks", `/dashboard/test-clocks/${clock.id}`]) {
    assert.equal((await page.goto(base + path)).status(), 404, path);
  }
  return page;
});

test("a payment series: its payments, cancelled after a confirmation", async () => {
  const series = await ok("POST", "/v1/payment-series", {
    customer: { customerAccountId: "ivo" }, paymentMethod: "pm_sandbox_ok", currency: "EUR", description: "Refills",
  }, 201);
  const t = await ok("POST", `/v1/payment-series/${series.id}/transactions`, { amount: "3.25", description: "First refill" }, 202);
  await waitFor("the series' charge", async () => (await ok("GET", `/v1/transactions/${t.id}`)).status === "succeeded");
  const page = await signIn();
  await page.getByRole("link", { name: "Payment series" }).click();
  await page.getByRole("link", { name: "Refills" }).click();
  await page.locator("#payments tr", { hasText: "€3.25" }).locator(".status", { hasText: "succeeded" }).waitFor();
  await page.getByRole("cell", { name: "First refill" }).waitFor();
  await accessible(page, "dashboard payment series detail");
  await page.screenshot({ path: `${env.screenshots}/dashboard-series.png`, fullPage: true });
  // Cancelling asks first; "No" changes nothing.
  await page.getByRole("link", { name: "Cancel…" }).click();
  await page.getByRole("heading", { name: "Cancel this payment series?" }).waitFor();
  await accessible(page, "dashboard payment series cancel confirmation");
  await page.getByRole("link", { name: "No, keep the payment series" }).click();
  assert.equal((await ok("GET", `/v1/payment-series/${series.id}`)).status, "active");
  await page.getByRole("link", { name: "Cancel…" }).click();
  await page.getByRole("button", { name: "Yes, cancel the payment series" }).click();
  await page.getByText("The payment series is cancelled.").waitFor();
  assert.equal((await ok("GET", `/v1/payment-series/${series.id}`)).status, "cancelled");
  const [type, actor, data] = await lastEvent(series.id);
  assert.deepEqual([type, actor, data.to], ["status_changed", "merchant", "cancelled"]);
  const evs = (await ok("GET", `/v1/events?objectId=${series.id}&limit=100`)).data;
  assert.equal(evs.filter((e) => e.type === "status_changed").length, 1, "one event");
  assert.equal(await page.getByRole("link", { name: "Cancel…" }).count(), 0);
  assert.equal((await page.locator("#series-status").textContent()).trim(), "cancelled");
  return page;
});

test("a webhook endpoint edited (a bad URL refused), disabled, then deleted after a confirmation", async () => {
  const ep = await ok("POST", "/v1/webhook-endpoints", { url: "http://127.0.0.1:9/edit-me" }, 201);
  const page = await signIn();
  await page.goto(`${base}/dashboard/webhooks/${ep.id}`);
  await page.getByRole("link", { name: "Edit", exact: true }).click();
  await accessible(page, "dashboard webhook edit");
  await page.getByLabel("URL").fill("ftp://nope.example");
  assert.equal(await submitted(page, page.getByRole("button", { name: "Save endpoint" }), `/dashboard/webhooks/${ep.id}/edit`), 422);
  await page.getByRole("alert").getByText("url:").waitFor();
  assert.equal(await page.getByLabel("URL").inputValue(), "ftp://nope.example", "what was typed stays");
  await accessible(page, "dashboard webhook edit refused");
  assert.equal((await ok("GET", `/v1/webhook-endpoints/${ep.id}`)).url, "http://127.0.0.1:9/edit-me", "unchanged");
  await page.getByLabel("URL").fill("http://127.0.0.1:9/edited");
  await page.getByLabel(/Event types/).fill("subscription.*");
  await page.getByLabel("Status").selectOption("disabled");
  await page.getByLabel("Description (optional)").fill("Edited on the dashboard");
  await page.getByRole("button", { name: "Save endpoint" }).click();
  await page.getByText("The endpoint is saved.").waitFor();
  const edited = await ok("GET", `/v1/webhook-endpoints/${ep.id}`);
  assert.deepEqual([edited.url, edited.eventTypes, edited.status, edited.description],
    ["http://127.0.0.1:9/edited", ["subscription.*"], "disabled", "Edited on the dashboard"]);
  const evs = (await ok("GET", `/v1/events?objectId=${ep.id}&limit=100`)).data;
  assert.deepEqual(evs.map((e) => [e.type, e.actor]), [["created", "merchant"], ["updated", "merchant"], ["status_changed", "merchant"]]);

  // Deleting asks first; "No" keeps it.
  await page.getByRole("link", { name: "Delete…" }).click();
  await page.getByRole("heading", { name: "Delete this webhook endpoint?" }).waitFor();
  await accessible(page, "dashboard webhook delete confirmation");
  await page.getByRole("link", { name: "No, keep the endpoint" }).click();
  assert.equal((await api("GET", `/v1/webhook-endpoints/${ep.id}`)).status, 200);
  await page.getByRole("link", { name: "Delete…" }).click();
  await page.getByRole("button", { name: "Yes, delete the endpoint" }).click();
  await page.getByText("The endpoint is deleted, with its deliveries.").waitFor();
  assert.equal((await api("GET", `/v1/webhook-endpoints/${ep.id}`)).status, 404);
  assert.deepEqual((await lastEvent(ep.id)).slice(0, 2), ["deleted", "merchant"]);
  assert.equal(await page.locator("#endpoints tr", { hasText: "/edited" }).count(), 0);
  return page;
});

await run();
