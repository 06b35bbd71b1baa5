//! Event type names as merchants see them (docs/webhooks.md#event-types):
//! `<objectType>.<what>`, where a status change is named after the new status.

use serde_json::Value;

/// Every type recur sends. Endpoints may subscribe to these, to `prefix.*` of an
/// object type below, or to `*`.
pub const ALL: &[&str] = &[
    "subscription.created",
    "subscription.updated",
    "subscription.trialing",
    "subscription.active",
    "subscription.past_due",
    "subscription.paused",
    "subscription.cancelled",
    "subscription.completed",
    "subscription.dead_lettered",
    "subscription.replayed",
    "subscription.change_requested",
    "subscription.change_scheduled",
    "subscription.change_applied",
    "subscription.change_failed",
    "subscription.change_superseded",
    "billing_cycle.created",
    "billing_cycle.pending",
    "billing_cycle.succeeded",
    "billing_cycle.retrying",
    "billing_cycle.retry_scheduled",
    "billing_cycle.retry_blocked",
    "billing_cycle.failed",
    "billing_cycle.error",
    "billing_cycle.cancelled",
    "billing_cycle.dead_lettered",
    "billing_cycle.replayed",
    "billing_cycle.payment_link_created",
    "billing_cycle.payment_link_reminder",
    "transaction.created",
    "transaction.succeeded",
    "transaction.declined",
    "transaction.error",
    "transaction.dead_lettered",
    "transaction.replayed",
    "transaction.replay_superseded",
    "plan.created",
    "plan.updated",
    "plan.active",
    "plan.archived",
    "plan.deleted",
    "payment_series.created",
    "payment_series.updated",
    "payment_series.cancelled",
    "checkout_session.created",
    "checkout_session.token_reissued",
    "checkout_session.card_refused",
    "checkout_session.locked",
    "checkout_session.payment_method_attached",
    "checkout_session.completed",
    "settings.updated",
    "customer_session.created",
    "customer_session.token_reissued",
    "customer.created",
    "customer.updated",
    "webhook_endpoint.created",
    "webhook_endpoint.updated",
    "webhook_endpoint.secret_rotated",
    "webhook_endpoint.enabled",
    "webhook_endpoint.disabled",
    "webhook_endpoint.deleted",
    "webhook_endpoint.delivery_retried",
    "webhook_endpoint.replayed",
];

/// The object types of `ALL` (what `prefix.*` may name).
pub const OBJECTS: &[&str] = &[
    "subscription",
    "billing_cycle",
    "transaction",
    "plan",
    "payment_series",
    "customer",
    "webhook_endpoint",
    "checkout_session",
    "customer_session",
    "settings",
];

/// The public type of an event recorded as (`object_type`, `kind`, `data`).
pub fn public(object_type: &str, kind: &str, data: &Value) -> String {
    match (kind, data.get("to").and_then(Value::as_str)) {
        ("status_changed", Some(to)) => format!("{object_type}.{to}"),
        _ => match kind.strip_prefix("charge_") {
            Some(what) if object_type == "transaction" => format!("transaction.{what}"),
            _ => format!("{object_type}.{kind}"),
        },
    }
}

/// Is `pattern` something an endpoint may subscribe to?
pub fn valid_pattern(pattern: &str) -> bool {
    pattern == "*"
        || ALL.contains(&pattern)
        || pattern.strip_suffix(".*").is_some_and(|object| OBJECTS.contains(&object))
}

/// Does a subscription list take `t`? (The same rule as SQL `webhook_subscribed`.)
pub fn subscribed(patterns: &[String], t: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*" || p == t || p.strip_suffix('*').is_some_and(|prefix| prefix.ends_with('.') && t.starts_with(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_changes_are_named_after_the_new_status() {
        assert_eq!(
            public("billing_cycle", "status_changed", &json!({"from": "pending", "to": "succeeded"})),
            "billing_cycle.succeeded"
        );
        assert_eq!(public("subscription", "status_changed", &json!({"to": "past_due"})), "subscription.past_due");
        assert_eq!(public("transaction", "charge_declined", &json!({})), "transaction.declined");
        assert_eq!(public("transaction", "charge_error", &json!({})), "transaction.error");
        assert_eq!(public("plan", "created", &json!({})), "plan.created");
    }

    #[test]
    fn every_listed_type_is_valid_and_under_a_known_object() {
        for t in ALL {
            assert!(valid_pattern(t), "{t}");
            let (object, _) = t.split_once('.').unwrap();
            assert!(OBJECTS.contains(&object), "{t}");
        }
        assert!(valid_pattern("*") && valid_pattern("billing_cycle.*"));
        assert!(!valid_pattern("billing.*") && !valid_pattern("billing_cycle.paid") && !valid_pattern(""));
    }

    #[test]
    fn patterns_match_exact_prefix_and_all() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribed(&p(&["*"]), "plan.created"));
        assert!(subscribed(&p(&["billing_cycle.*"]), "billing_cycle.failed"));
        assert!(!subscribed(&p(&["billing_cycle.*"]), "billing_cycles.failed"));
        assert!(subscribed(&p(&["plan.created"]), "plan.created"));
        assert!(!subscribed(&p(&["plan.created"]), "plan.updated"));
    }
}
