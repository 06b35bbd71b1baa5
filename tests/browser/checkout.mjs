// The checkout page in a real Chromium (docs/pages.md#the-checkout). Run by
// tests/browser/main.rs, which starts recur (API, scheduler, worker) over a fresh
// database; lib.mjs holds the API helpers, the browser and the runner. Every check is
// an assertion, and every page reached is checked by axe-core.

import http from "node:http";
import assert from "node:assert/strict";
import { env, base, ok, admin, open, accessible, fits, test, run } from "./lib.mjs";

const OK = "4242424242424242";
const DECLINED = "4000000000009995";

let customers = 0;

/** A pending subscription and a checkout session for it. */
async function checkout(session = {}) {
  const sub = await ok("POST", "/v1/subscriptions", {
    customer: { customerAccountId: `browser-${++customers}` },
    amount: "9.99",
    currency: "EUR",
    interval: { unit: "month", count: 1 },
    description: "Gold monthly",
  }, 201);
  assert.equal(sub.status, "pending");
  const s = await ok("POST", "/v1/checkout-sessions", { subscriptionId: sub.id, ...session }, 201);
  return { sub: sub.id, session: s };
}

async function ledger() {
  return (await admin("GET", `/admin/sandbox/charges?merchantKey=${env.key}&limit=100`)).data;
}

// ---- the customer's side: the browser ------------------------------------------

async function fillCard(page, number, expiry = "12/30", cvc = "123") {
  await page.fill("#name", "Ada Lovelace");
  await page.fill("#number", number);
  await page.fill("#expiry", expiry);
  await page.fill("#cvc", cvc);
}


// ---- tests ----------------------------------------------------------------------

test("the OK card pays: the subscription is active and charged once", async () => {
  const { sub, session } = await checkout({ returnUrl: `${base}/healthz?from=checkout` });
  const { page } = await open();
  const res = await page.goto(session.url);
  assert.equal(res.status(), 200);
  const csp = res.headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(res.headers()["x-content-type-options"], "nosniff");
  assert.equal(res.headers()["referrer-policy"], "no-referrer");
  await assert.doesNotReject(page.getByText("€9.99").first().waitFor());
  await page.getByText("Gold monthly").waitFor();
  await accessible(page, "checkout form");
  await fillCard(page, OK, "1230");
  // The script formats the number and the expiry and names the brand.
  assert.equal(await page.inputValue("#number"), "4242 4242 4242 4242");
  assert.equal(await page.inputValue("#expiry"), "12/30");
  assert.equal(await page.textContent("#brand"), "Visa");
  await page.screenshot({ path: `${env.screenshots}/checkout.png`, fullPage: true });
  await Promise.all([
    page.waitForURL((u) => u.searchParams.get("status") === "complete", { timeout: 20000 }),
    page.click("button[type=submit]"),
  ]);
  const back = new URL(page.url());
  assert.equal(back.pathname, "/healthz");
  assert.equal(back.searchParams.get("checkout_session"), session.id);

  const s = await ok("GET", `/v1/subscriptions/${sub}`);
  assert.equal(s.status, "active");
  assert.deepEqual(s.paymentMethodDetails, { brand: "visa", last4: "4242", expMonth: 12, expYear: 2030 });
  const cycles = (await ok("GET", `/v1/subscriptions/${sub}/billing-cycles`)).data;
  assert.equal(cycles.length, 1);
  assert.equal(cycles[0].sequence, 1);
  assert.equal(cycles[0].status, "succeeded");
  const charges = (await ledger()).filter((c) => c.customerAccountId === `browser-${customers}`);
  assert.equal(charges.length, 1);
  const events = (await ok("GET", `/v1/events?objectId=${sub}`)).data;
  assert.ok(events.some((e) => e.type === "updated" && e.actor === "customer"), JSON.stringify(events));
  usedLink = session.url;
  return page;
});

test("a declined card shows the decline and a second card pays", async () => {
  const { sub, session } = await checkout();
  const { page } = await open();
  await page.goto(session.url);
  await fillCard(page, DECLINED);
  // While axe looks at the processing page, its poll is held at "processing" (the
  // page would otherwise reload under axe once the charge settles).
  const hold = (route) => route.fulfill({ json: { state: "processing" } });
  await page.route("**/status", hold);
  await page.click("button[type=submit]");
  await page.getByRole("heading", { name: "Processing your payment…" }).waitFor();
  await accessible(page, "checkout processing");
  await page.unroute("**/status", hold);
  // The processing page polls until the charge settles, then shows the form again.
  await page.getByText("insufficient funds").waitFor({ timeout: 20000 });
  await accessible(page, "checkout after a decline");
  await page.screenshot({ path: `${env.screenshots}/checkout-declined.png`, fullPage: true });
  await fillCard(page, OK);
  await page.click("button[type=submit]");
  await page.getByRole("heading", { name: "Payment complete" }).waitFor({ timeout: 20000 });
  await accessible(page, "checkout complete");
  await page.screenshot({ path: `${env.screenshots}/checkout-complete.png`, fullPage: true });
  const cycles = (await ok("GET", `/v1/subscriptions/${sub}/billing-cycles`)).data;
  assert.equal(cycles[0].status, "succeeded");
  assert.deepEqual(cycles[0].transactions.map((t) => t.status), ["declined", "succeeded"]);
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "active");
  return page;
});

test("a wrong Luhn and a past expiry are refused on the page and nothing is stored", async () => {
  const { sub, session } = await checkout();
  const { page } = await open();
  await page.goto(session.url);
  await fillCard(page, "4242424242424241", "01/20");
  const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("button[type=submit]")]);
  assert.equal(res.status(), 422);
  await page.getByText("This card number is not valid").first().waitFor();
  await page.getByText("This card has expired").first().waitFor();
  assert.equal(await page.getAttribute("#number", "aria-invalid"), "true");
  assert.equal(await page.getAttribute("#expiry", "aria-invalid"), "true");
  assert.equal(await page.inputValue("#number"), "", "the number is never filled back in");
  await accessible(page, "checkout with errors");
  await page.screenshot({ path: `${env.screenshots}/checkout-errors.png`, fullPage: true });
  const s = await ok("GET", `/v1/subscriptions/${sub}`);
  assert.equal(s.status, "pending");
  assert.equal(s.paymentMethod, null);
  return page;
});

test("5 refused cards lock the session", async () => {
  const { session } = await checkout();
  const { page } = await open();
  await page.goto(session.url);
  let last;
  for (let i = 0; i < 5; i++) {
    await fillCard(page, "4242424242424241");
    [last] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("button[type=submit]")]);
  }
  assert.equal(last.status(), 410);
  await page.getByRole("heading", { name: "This payment link is locked" }).waitFor();
  await accessible(page, "locked checkout");
  await page.screenshot({ path: `${env.screenshots}/checkout-locked.png`, fullPage: true });
  const again = await page.goto(session.url);
  assert.equal(again.status(), 410);
  assert.equal((await ok("GET", `/v1/checkout-sessions/${session.id}`)).status, "locked");
  return page;
});

test("the form works without JavaScript", async () => {
  const { sub, session } = await checkout({ returnUrl: `${base}/healthz?from=nojs` });
  const { page } = await open({ javaScriptEnabled: false });
  await page.goto(session.url);
  await fillCard(page, OK);
  // The processing page refreshes itself (meta refresh, every 2 s) until the charge
  // settles, then the customer is sent back.
  const back = page.waitForURL((u) => u.searchParams.get("status") === "complete", { timeout: 20000 });
  await page.click("button[type=submit]");
  await page.getByRole("heading", { name: "Processing your payment…" }).waitFor();
  await page.screenshot({ path: `${env.screenshots}/checkout-processing.png`, fullPage: true });
  await back;
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "active");
  return page;
});

test("the widget: only allowed origins may frame the checkout, and onComplete gets the result", async () => {
  // A merchant's site on another loopback origin, mounting the checkout with
  // recur's widget.js.
  const server = http.createServer((req, res) => {
    const q = new URL(req.url, "http://x").searchParams;
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html lang="en"><title>Shop</title><h1>Shop</h1><div id="pay"></div>
      <script src="${base}/widget.js"></script>
      <script>
        window.results = [];
        Recur.mount({token: ${JSON.stringify(q.get("token"))}, target: "#pay",
          onComplete: (r) => results.push(r)});
      </script>`);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const port = server.address().port;
  try {
    const allowed = `http://localhost:${port}`;
    await ok("PATCH", "/v1/settings", { allowedOrigins: [allowed] });
    const { sub, session } = await checkout();
    const shop = (origin) => `${origin}/?token=${session.token}`;

    // Not allowed: the browser refuses to render the checkout in the frame.
    const { page: evil } = await open();
    evil.expectErrors = true;
    const framed = evil.waitForResponse((r) => r.url() === session.url);
    await evil.goto(shop(`http://127.0.0.1:${port}`));
    const res = await framed;
    assert.match(res.headers()["content-security-policy"], new RegExp(`frame-ancestors ${allowed}`));
    await evil.waitForTimeout(300);
    const child = evil.frames().find((f) => f !== evil.mainFrame());
    assert.equal(await child.locator("#number").count(), 0, "the checkout rendered in a frame of a foreign origin");

    // Allowed: the customer pays inside the frame; onComplete gets the result.
    const { page } = await open();
    await page.goto(shop(allowed));
    // A message from anywhere but recur's frame is ignored.
    await page.evaluate(() => window.postMessage({ source: "recur-checkout", status: "complete" }, "*"));
    const frame = page.frameLocator("iframe");
    await frame.locator("#number").waitFor();
    assert.deepEqual(await page.evaluate(() => window.results), []);
    await frame.locator("#name").fill("Ada Lovelace");
    await frame.locator("#number").fill(OK);
    await frame.locator("#expiry").fill("12/30");
    await frame.locator("#cvc").fill("123");
    await frame.locator("button[type=submit]").click();
    await page.waitForFunction(() => window.results.length > 0, null, { timeout: 20000 });
    const results = await page.evaluate(() => window.results);
    assert.equal(results.length, 1);
    assert.equal(results[0].status, "complete");
    assert.equal(results[0].subscriptionId, sub);
    assert.equal(results[0].checkoutSessionId, session.id);
    assert.deepEqual(results[0].paymentMethod, { brand: "visa", last4: "4242" });
    assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "active");
    await ok("PATCH", "/v1/settings", { allowedOrigins: [] });
    return page;
  } finally {
    server.close();
  }
});

test("360 px wide: no horizontal scroll", async () => {
  const { session } = await checkout();
  const { page } = await open({ viewport: { width: 360, height: 740 } });
  await page.goto(session.url);
  await fits(page, "checkout form");
  await accessible(page, "checkout form at 360 px");
  await page.screenshot({ path: `${env.screenshots}/checkout-360.png`, fullPage: true });
  await fillCard(page, "4242424242424241");
  await page.click("button[type=submit]");
  await page.getByText("This card number is not valid").first().waitFor();
  await fits(page, "checkout with errors");
  return page;
});

test("keyboard only: Tab through the form and pay with Enter", async () => {
  const { sub, session } = await checkout();
  const { page } = await open();
  await page.goto(session.url);
  const order = [];
  for (const [id, text] of [["name", "Ada Lovelace"], ["number", OK], ["expiry", "1230"], ["cvc", "123"]]) {
    await page.keyboard.press("Tab");
    order.push(await page.evaluate(() => document.activeElement.id));
    await page.keyboard.type(text);
    assert.equal(order.at(-1), id, `Tab order: ${order}`);
  }
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute("type")), "submit");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Payment complete" }).waitFor({ timeout: 20000 });
  assert.equal((await ok("GET", `/v1/subscriptions/${sub}`)).status, "active");
  return page;
});

test("expired and used links answer 410 with their page", async () => {
  const { session } = await checkout({ expiresInSeconds: 1800 });
  await admin("POST", "/admin/clock", { advanceSeconds: 1800 });
  const { page } = await open();
  const res = await page.goto(session.url);
  assert.equal(res.status(), 410);
  await page.getByRole("heading", { name: "This payment link has expired" }).waitFor();
  await accessible(page, "expired checkout");
  await page.screenshot({ path: `${env.screenshots}/checkout-expired.png`, fullPage: true });
  const used = await page.goto(usedLink);
  assert.equal(used.status(), 410);
  await page.getByRole("heading", { name: "This payment link has already been used" }).waitFor();
  const missing = await page.goto(`${base}/checkout/not-a-token`);
  assert.equal(missing.status(), 404);
  await accessible(page, "unknown link");
  return page;
});

let usedLink;

await run();
