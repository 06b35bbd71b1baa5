//! A merchant's own `/v1` request rates (docs/operations.md#rate-limits): reads and
//! writes, each a sustained number of requests per second and a burst, or the process
//! default (`RECUR_RATE_LIMIT_READS`, `RECUR_RATE_LIMIT_WRITES`) when unset.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, FieldError, Result};
use crate::ratelimit::Rate;
use crate::validate::Errors;

/// Bounds of a merchant's own rate (the CHECK constraints of `merchants`).
pub const MAX_PER_SECOND: i64 = 100_000;
pub const MAX_BURST: i64 = 1_000_000;

/// The rates a merchant has of its own; `None`: the process default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MerchantRates {
    pub reads: Option<Rate>,
    pub writes: Option<Rate>,
}

impl MerchantRates {
    pub fn view(&self) -> RateLimitsView {
        let v = |r: &Option<Rate>| r.map(|r| RateView { per_second: r.count, burst: r.burst });
        RateLimitsView { reads: v(&self.reads), writes: v(&self.writes) }
    }
}

/// A merchant's own rates as the operator sees them; `null`: the process default.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitsView {
    pub reads: Option<RateView>,
    pub writes: Option<RateView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateView {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

/// A rate from its stored columns (both set or neither, by constraint).
pub fn stored(per_second: Option<i32>, burst: Option<i32>) -> Option<Rate> {
    match (per_second, burst) {
        (Some(p), Some(b)) if p > 0 && b > 0 => Some(Rate::per_second(p as u32, b as u32)),
        _ => None,
    }
}

/// A checked `rateLimits` of `PATCH /admin/merchants/{merchantKey}`: for each of reads
/// and writes, `None` leaves it as it is, `Some(None)` returns it to the default.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Patch {
    pub reads: Option<Option<Rate>>,
    pub writes: Option<Option<Rate>>,
}

/// Read `rateLimits`: `null` (both to the defaults) or `{reads?, writes?}`, each `null`
/// or `{perSecond, burst?}` (burst defaults to perSecond). Wrong types and unknown
/// fields go to `shape` (400), broken rules to `rules` (422), each naming its field.
pub fn parse(shape: &mut Errors, rules: &mut Errors, value: &Value) -> Option<Patch> {
    match value {
        Value::Null => Some(Patch { reads: Some(None), writes: Some(None) }),
        Value::Object(o) => {
            for name in o.keys().filter(|k| !["reads", "writes"].contains(&k.as_str())) {
                let shown = if name.is_empty() { "\"\"" } else { name.as_str() };
                shape.push(FieldError::new(format!("rateLimits.{shown}"), "is not a field of this object"));
            }
            let reads = o.get("reads").map(|v| rate(shape, rules, "rateLimits.reads", v));
            let writes = o.get("writes").map(|v| rate(shape, rules, "rateLimits.writes", v));
            if o.is_empty() {
                rules.push(FieldError::new(
                    "rateLimits",
                    "give reads, writes or both (null returns one to the default)",
                ));
            }
            Some(Patch { reads, writes })
        }
        _ => {
            shape.push(FieldError::new("rateLimits", "must be an object or null"));
            None
        }
    }
}

/// One rate: `null` is `None` (the default); an invalid one is recorded and `None` too
/// (the caller refuses the whole body when anything was recorded).
fn rate(shape: &mut Errors, rules: &mut Errors, field: &str, value: &Value) -> Option<Rate> {
    let o = match value {
        Value::Null => return None,
        Value::Object(o) => o,
        _ => {
            shape.push(FieldError::new(field, "must be an object {perSecond, burst} or null"));
            return None;
        }
    };
    for name in o.keys().filter(|k| !["perSecond", "burst"].contains(&k.as_str())) {
        let shown = if name.is_empty() { "\"\"" } else { name.as_str() };
        shape.push(FieldError::new(format!("{field}.{shown}"), "is not a field of this object"));
    }
    let per_second = match o.get("perSecond") {
        None | Some(Value::Null) => {
            rules.push(FieldError::new(format!("{field}.perSecond"), "is required"));
            None
        }
        Some(v) => whole(shape, rules, &format!("{field}.perSecond"), v, MAX_PER_SECOND),
    };
    let burst = match o.get("burst") {
        None | Some(Value::Null) => per_second,
        Some(v) => whole(shape, rules, &format!("{field}.burst"), v, MAX_BURST),
    };
    Some(Rate::per_second(per_second? as u32, burst? as u32))
}

fn whole(shape: &mut Errors, rules: &mut Errors, field: &str, v: &Value, max: i64) -> Option<i64> {
    let Value::Number(n) = v else {
        shape.push(FieldError::new(field, "must be a number"));
        return None;
    };
    match n.as_i64() {
        Some(i) if (1..=max).contains(&i) => Some(i),
        _ => {
            rules.push(FieldError::new(field, format!("must be a whole number from 1 to {max}")));
            None
        }
    }
}

/// Store a merchant's rates in the caller's transaction; `Error::NotFound` for an unknown key.
pub async fn set(conn: &mut PgConnection, merchant_key: Uuid, patch: &Patch) -> Result<()> {
    let cols = |r: Option<Option<Rate>>| match r {
        None => (false, None, None),
        Some(None) => (true, None, None),
        Some(Some(r)) => (true, Some(r.count as i32), Some(r.burst as i32)),
    };
    let (set_reads, reads_per_second, reads_burst) = cols(patch.reads);
    let (set_writes, writes_per_second, writes_burst) = cols(patch.writes);
    let updated = sqlx::query!(
        "UPDATE merchants SET
             rate_limit_reads_per_second = CASE WHEN $2 THEN $3 ELSE rate_limit_reads_per_second END,
             rate_limit_reads_burst = CASE WHEN $2 THEN $4 ELSE rate_limit_reads_burst END,
             rate_limit_writes_per_second = CASE WHEN $5 THEN $6 ELSE rate_limit_writes_per_second END,
             rate_limit_writes_burst = CASE WHEN $5 THEN $7 ELSE rate_limit_writes_burst END
         WHERE merchant_key = $1",
        merchant_key,
        set_reads,
        reads_per_second,
        reads_burst,
        set_writes,
        writes_per_second,
        writes_burst,
    )
    .execute(conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::NotFound("merchant"));
    }
    Ok(())
}
