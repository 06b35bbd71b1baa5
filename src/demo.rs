//! `recur all --demo`: a sandbox merchant, a plan and a subscription that is due at
//! once, so a new user sees a real charge go through within seconds.

use std::net::SocketAddr;

use serde_json::json;

use crate::runtime::{Runtime, operator_error};

pub async fn announce(rt: &Runtime, addr: SocketAddr) -> anyhow::Result<()> {
    let creds = crate::merchants::create(&rt.pool, "demo", true).await.map_err(operator_error)?;
    let now = rt.clock.now().await.map_err(operator_error)?;
    let mut tx = rt.pool.begin().await?;
    let customer: crate::customers::CustomerInput =
        serde_json::from_value(json!({"customerAccountId": "demo-customer", "email": "demo@example.com"}))?;
    let req: crate::subscriptions::CreateSubscription = serde_json::from_value(json!({
        "customer": customer_json(&customer),
        "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1},
        "paymentMethod": "pm_sandbox_ok", "description": "recur demo subscription"
    }))?;
    let pm_accepted = rt.app().accepts(creds.merchant_key, Some("pm_sandbox_ok")).await.map_err(operator_error)?;
    let valid = req.validate(None, pm_accepted).map_err(operator_error)?;
    let changed = crate::subscriptions::lifecycle::create(&mut tx, creds.merchant_id, valid, now)
        .await
        .map_err(operator_error)?;
    // A second subscription waits for its card: the customer gives it on the checkout
    // page (docs/pages.md).
    let pending: crate::subscriptions::CreateSubscription = serde_json::from_value(json!({
        "customer": customer_json(&customer),
        "amount": "4.99", "currency": "EUR", "interval": {"unit": "month", "count": 1},
        "description": "recur demo checkout"
    }))?;
    let pending = crate::subscriptions::lifecycle::create(
        &mut tx,
        creds.merchant_id,
        pending.validate(None, true).map_err(operator_error)?,
        now,
    )
    .await
    .map_err(operator_error)?;
    let session = crate::checkout::CreateSession {
        subscription_id: Some(pending.subscription.id),
        payment_series_id: None,
        return_url: None,
        expires_in_seconds: None,
    };
    let (_, checkout_token) =
        crate::checkout::create(&mut tx, creds.merchant_id, session.validate().map_err(operator_error)?, now)
            .await
            .map_err(operator_error)?;
    let portal = crate::portal::CreateCustomerSession {
        customer_account_id: changed.subscription.customer_account_id.clone(),
        return_url: None,
        expires_in_seconds: Some(crate::portal::MAX_EXPIRY_SECS),
    };
    let expires = portal.validate().map_err(operator_error)?;
    let (_, portal_token) =
        crate::portal::create(&mut tx, creds.merchant_id, &portal, expires, now).await.map_err(operator_error)?;
    tx.commit().await?;
    rt.app().enqueue(&changed.jobs).await;
    let host = if addr.ip().is_unspecified() { format!("127.0.0.1:{}", addr.port()) } else { addr.to_string() };
    let key = creds.merchant_key;
    let secret = &creds.secret;
    let sub = changed.subscription.id;
    println!(
        "\nrecur is running on http://{host}\n\
         demo merchant: merchantKey={key} secret={secret}\n\
         demo subscription {sub} (EUR 9.99 monthly, pm_sandbox_ok) is due now.\n\n\
         Its billing cycles (the first one charged within seconds):\n  \
         curl -s -u {key}:{secret} -H 'X-API-KEY: {key}' http://{host}/v1/subscriptions/{sub}/billing-cycles\n"
    );
    let public = &rt.settings.public_url.trim_end_matches('/').to_owned();
    println!(
        "The customer's pages (docs/pages.md):\n  \
         checkout of a EUR 4.99 monthly subscription (test card 4242 4242 4242 4242, any future expiry, any CVC):\n    \
         {public}/checkout/{checkout_token}\n  \
         the customer's portal:\n    \
         {public}/portal/{portal_token}\n"
    );
    println!(
        "Webhooks: run a receiver that prints what it gets (in another terminal),\n  \
         python3 -c 'import http.server as h\n\
         class R(h.BaseHTTPRequestHandler):\n \
         def do_POST(s): print(s.headers, s.rfile.read(int(s.headers[\"content-length\"])).decode(), flush=True); s.send_response(204); s.end_headers()\n\
         h.HTTPServer((\"127.0.0.1\", 9000), R).serve_forever()'\n\
         then add it as an endpoint; its secret verifies the webhook-signature header (docs/webhooks.md):\n  \
         curl -s -u {key}:{secret} -H 'X-API-KEY: {key}' -H 'Content-Type: application/json' \\\n    \
         -d '{{\"url\": \"http://127.0.0.1:9000/\"}}' http://{host}/v1/webhook-endpoints\n\
         and replay the last hour's events to it:\n  \
         curl -s -u {key}:{secret} -H 'X-API-KEY: {key}' -H 'Content-Type: application/json' \\\n    \
         -d \"{{\\\"since\\\": \\\"$(date -u -d '-1 hour' +%FT%TZ)\\\"}}\" http://{host}/v1/webhook-endpoints/<id>/replay\n"
    );
    tokio::spawn(report_first_charge(rt.pool.clone(), sub));
    Ok(())
}

/// Print the demo subscription's first cycle once it settles, so the charge is seen
/// going through without a curl.
async fn report_first_charge(pool: sqlx::PgPool, subscription: uuid::Uuid) {
    use crate::billing::cycles::{self, CycleStatus};
    for _ in 0..240 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let Ok(mut conn) = pool.acquire().await else { continue };
        let Ok(found) = cycles::list(&mut conn, subscription, None, 1).await else { continue };
        let Some(c) = found.first() else { continue };
        if matches!(c.status, CycleStatus::Succeeded | CycleStatus::Failed | CycleStatus::Error) {
            let Ok(views) = cycles::with_transactions(&mut conn, std::slice::from_ref(c)).await else { continue };
            let reference = views
                .first()
                .and_then(|v| v.transactions.last())
                .and_then(|t| t.gateway_reference.clone())
                .unwrap_or_default();
            let status = serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_owned));
            println!(
                "demo charge: cycle {} of {subscription}: {} {} {} (gateway reference {reference})\n",
                c.sequence,
                status.unwrap_or_default(),
                c.currency,
                c.amount,
            );
            return;
        }
    }
}

fn customer_json(c: &crate::customers::CustomerInput) -> serde_json::Value {
    json!({"customerAccountId": c.customer_account_id, "email": c.email})
}
