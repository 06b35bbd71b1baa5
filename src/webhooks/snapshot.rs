//! The object of a webhook message: what its GET returned when the event committed
//! (docs/webhooks.md#payload). Taken inside the event's transaction, by the same
//! views the API serves, and kept on the event row. Objects stay serialized JSON from
//! the view to the message body (no `serde_json::Value` tree in between: a surge
//! snapshots thousands of them).

use std::collections::HashMap;

use serde_json::json;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::billing::{TransactionView, cycles, transactions};
use crate::error::{Error, Result};

/// An event whose object is to be kept.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub merchant_id: Uuid,
    pub object_type: String,
    pub object_id: Uuid,
}

/// A serialized object.
pub type Object = Box<RawValue>;

/// The current object of each event, in order (`{"id", "deleted": true}` when gone).
pub async fn take(conn: &mut PgConnection, wanted: &[Wanted]) -> Result<Vec<Object>> {
    let mut by_type: HashMap<&str, Vec<(Uuid, Uuid)>> = HashMap::new();
    for w in wanted {
        by_type.entry(w.object_type.as_str()).or_default().push((w.merchant_id, w.object_id));
    }
    let mut objects: HashMap<Uuid, Object> = HashMap::new();
    for (object_type, ids) in by_type {
        objects.extend(load(conn, object_type, &ids).await?);
    }
    wanted
        .iter()
        .map(|w| match objects.get(&w.object_id) {
            Some(o) => Ok(o.clone()),
            None => to_json(&json!({"id": w.object_id, "deleted": true})),
        })
        .collect()
}

/// Keep the current object on events recorded without one (replayed to an endpoint
/// that did not exist when they happened).
pub async fn store(conn: &mut PgConnection, event_ids: &[Uuid], wanted: &[Wanted]) -> Result<()> {
    let values = take(conn, wanted).await?;
    let texts: Vec<&str> = values.iter().map(|v| v.get()).collect();
    sqlx::query!(
        "UPDATE events e SET object = u.o::json FROM unnest($1::uuid[], $2::text[]) AS u(id, o) WHERE e.id = u.id",
        event_ids,
        &texts as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Objects of one type by id, as the API shows them; absent ones (deleted) are left out.
pub async fn load(conn: &mut PgConnection, object_type: &str, ids: &[(Uuid, Uuid)]) -> Result<HashMap<Uuid, Object>> {
    let only: Vec<Uuid> = ids.iter().map(|(_, id)| *id).collect();
    let mut out = HashMap::new();
    match object_type {
        "billing_cycle" => {
            let rows = cycles::by_ids(conn, &only).await?;
            for v in cycles::with_transactions(conn, &rows).await? {
                out.insert(v.id, to_json(&v)?);
            }
        }
        "subscription" => {
            for sub in crate::subscriptions::repo::by_ids(conn, &only).await? {
                out.insert(sub.id, to_json(&crate::subscriptions::SubscriptionView::from(&sub))?);
            }
        }
        "transaction" => {
            for t in transactions::by_ids(conn, &only).await? {
                out.insert(t.id, to_json(&TransactionView::from(&t))?);
            }
        }
        _ => {
            for (merchant, id) in ids {
                if let Some(v) = one(conn, object_type, *merchant, *id).await? {
                    out.insert(*id, v);
                }
            }
        }
    }
    Ok(out)
}

async fn one(conn: &mut PgConnection, object_type: &str, merchant: Uuid, id: Uuid) -> Result<Option<Object>> {
    let found = match object_type {
        "plan" => {
            crate::plans::repo::get(conn, merchant, id).await.and_then(|p| to_json(&crate::plans::PlanView::from(&p)))
        }
        "payment_series" => {
            crate::series::get(conn, merchant, id).await.and_then(|s| to_json(&crate::series::SeriesView::from(&s)))
        }
        "customer" => crate::customers::by_id(conn, merchant, id).await.and_then(|c| to_json(&c)),
        "webhook_endpoint" => super::endpoints::get(conn, merchant, id).await.and_then(|e| to_json(&e.view())),
        // The status as of the wall clock (a snapshot has no test clock at hand).
        "checkout_session" => crate::checkout::get(conn, merchant, id)
            .await
            .and_then(|s| to_json(&crate::checkout::SessionView::of(&s, chrono::Utc::now()))),
        "settings" => crate::settings::get(conn, merchant).await.and_then(|s| to_json(&s)),
        _ => return to_json(&json!({"id": id})).map(Some),
    };
    match found {
        Ok(v) => Ok(Some(v)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Object> {
    serde_json::value::to_raw_value(v).map_err(|e| Error::Internal(e.into()))
}
