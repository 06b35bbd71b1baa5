// The payment link page in a real Chromium (docs/payment-links.md#paying). Run by
// tests/browser/main.rs, which starts recur (API, scheduler, worker) over a fresh
// database; lib.mjs holds the API helpers, the browser and the runner. Every page
// reached is checked by axe-core.

import assert from "node:assert/strict";
import { env, base, ok, admin, open, accessible, fits, test, run } from "./lib.mjs";

const OK = "4242424242424242";
const DECLINED = "4000000000009995";

let customers = 0;

/** An active plan collected by payment links. */
const plan = await ok("POST", "/v1/plans", {
  name: "Pro monthly",
  amount: "25.00",
  currency: "EUR",
  interval: { unit: "month", count: 1 },
  status: "active",
  collectionMethod: "send_payment_link",
  daysUntilDue: 3,
  gracePeriodDays: 30,
}, 201);

/** A link subscription, and its first cycle once the scheduler opened it with a link. */
async function linkCycle() {
  const customer = `pay-${++customers}`;
  const sub = await ok("POST", "/v1/subscriptions", { customer: { customerAccountId: customer }, planId: plan.id }, 201);
  assert.equal(sub.status, "active");
  for (let i = 0; i < 200; i++) {
    const cycles = (await ok("GET", `/v1/subscriptions/${sub.id}/billing-cycles`)).data;
    if (cycles.length && cycles[0].paymentLink) {
      // The link's path on this app (the URL's base is RECUR_PUBLIC_URL).
      return { customer, sub: sub.id, cycle: cycles[0], url: base + new URL(cycles[0].paymentLink.url).pathname };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("no payment link was made");
}

async function fillCard(page, number) {
  await page.fill("#name", "Ada Lovelace");
  await page.fill("#number", number);
  await page.fill("#expiry", "12/30");
  await page.fill("#cvc", "123");
}

async function charges(customer) {
  const all = (await admin("GET", `/admin/sandbox/charges?merchantKey=${env.key}&limit=100`)).data;
  return all.filter((c) => c.customerAccountId === customer);
}

test("the customer pays the link: the cycle succeeds, charged once, and the link says already paid", async () => {
  const { customer, cycle, url } = await linkCycle();
  assert.equal(cycle.status, "pending");
  assert.equal(cycle.collectionMethod, "send_payment_link");
  assert.equal(cycle.paymentLink.status, "active");
  const { page } = await open();
  const res = await page.goto(url);
  assert.equal(res.status(), 200);
  const csp = res.headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(res.headers()["referrer-policy"], "no-referrer");
  await page.getByText("€25.00").first().waitFor();
  await page.getByText("Pro monthly").waitFor();
  await accessible(page, "payment link form");
  await fillCard(page, DECLINED);
  await page.click("button[type=submit]");
  await page.getByText("insufficient funds").waitFor({ timeout: 20000 });
  await accessible(page, "payment link after a decline");
  await page.screenshot({ path: `${env.screenshots}/pay-declined.png`, fullPage: true });
  await fillCard(page, OK);
  assert.equal(await page.inputValue("#number"), "4242 4242 4242 4242");
  await page.screenshot({ path: `${env.screenshots}/pay.png`, fullPage: true });
  await page.click("button[type=submit]");
  await page.getByRole("heading", { name: "Already paid" }).waitFor({ timeout: 20000 });
  await accessible(page, "payment link paid");
  await page.screenshot({ path: `${env.screenshots}/pay-paid.png`, fullPage: true });

  const c = await ok("GET", `/v1/billing-cycles/${cycle.id}`);
  assert.equal(c.status, "succeeded");
  assert.equal(c.paymentLink.status, "paid");
  assert.deepEqual(c.transactions.map((t) => [t.kind, t.status]), [["payment_link", "declined"], ["payment_link", "succeeded"]]);
  assert.equal((await charges(customer)).length, 1, "one approved charge in the ledger");

  // Anyone opening the link afterwards is told it is paid, with no form.
  const other = await open();
  const again = await other.page.goto(url);
  assert.equal(again.status(), 200);
  await other.page.getByRole("heading", { name: "Already paid" }).waitFor();
  assert.equal(await other.page.locator("form").count(), 0);
  await other.context.close();
  return page;
});

test("the link page fits 360 px and works by keyboard", async () => {
  const { customer, url } = await linkCycle();
  const { page } = await open({ viewport: { width: 360, height: 740 } });
  await page.goto(url);
  await fits(page, "payment link at 360 px");
  await accessible(page, "payment link at 360 px");
  await page.screenshot({ path: `${env.screenshots}/pay-360.png`, fullPage: true });
  await page.focus("#name");
  await page.keyboard.type("Ada Lovelace");
  await page.keyboard.press("Tab");
  await page.keyboard.type(OK);
  await page.keyboard.press("Tab");
  await page.keyboard.type("1230");
  await page.keyboard.press("Tab");
  await page.keyboard.type("123");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Already paid" }).waitFor({ timeout: 20000 });
  await fits(page, "paid at 360 px");
  assert.equal((await charges(customer)).length, 1);
  return page;
});

test("an expired link answers 410 and says so", async () => {
  const { url, cycle } = await linkCycle();
  await admin("POST", "/admin/clock", { advanceSeconds: 3 * 86400 + 60 });
  for (let i = 0; i < 200; i++) {
    const c = await ok("GET", `/v1/billing-cycles/${cycle.id}`);
    if (c.status === "failed") {
      assert.equal(c.failureCode, "link_expired");
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const { page } = await open();
  page.expectErrors = true;
  const res = await page.goto(url);
  assert.equal(res.status(), 410);
  await page.getByRole("heading", { name: "This payment link has expired" }).waitFor();
  await accessible(page, "expired payment link");
  await page.screenshot({ path: `${env.screenshots}/pay-expired.png`, fullPage: true });
  return page;
});

test("an unknown link is the not-found page", async () => {
  const { page } = await open();
  page.expectErrors = true;
  const res = await page.goto(`${base}/pay/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`);
  assert.equal(res.status(), 404);
  await accessible(page, "unknown payment link");
  return page;
});

await run();
