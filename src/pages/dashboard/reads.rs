//! Reads the dashboard needs that no API route makes yet. Only ids are selected here;
//! the rows themselves come from the domain's own functions. (A payment series'
//! transactions would belong in `series.rs`, which the API's routes own.)

use sqlx::PgConnection;
use uuid::Uuid;

use crate::billing::transactions::{self, Transaction};
use crate::error::Result;

/// The transactions (charges) of the merchant's payment series `series_id`, oldest
/// first, after `after`, at most `limit`.
pub async fn series_payments(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    series_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Transaction>> {
    let ids = sqlx::query_scalar!(
        "SELECT id FROM transactions WHERE merchant_id = $1 AND payment_series_id = $2
           AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
        merchant_id,
        series_id,
        after,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = transactions::by_ids(conn, &ids).await?;
    rows.sort_by_key(|t| t.id);
    Ok(rows)
}
