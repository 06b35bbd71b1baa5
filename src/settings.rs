//! A merchant's page settings (docs/pages.md#settings): the origins allowed to frame
//! its checkout, and the actions its customers may take in the portal. A merchant
//! that never changed them has the defaults below.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, FieldError, Result};
use crate::events::{self, Actor, NewEvent};
use crate::validate::Errors;

/// At most this many origins may frame a merchant's checkout.
pub const MAX_ORIGINS: usize = 20;
/// At most this many plans may be offered for switching.
pub const MAX_SWITCHABLE_PLANS: usize = 50;

/// The portal's actions (docs/pages.md#the-portal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortalSettings {
    pub pause: bool,
    pub cancel: bool,
    pub cancel_at_period_end: bool,
    pub switch_plan: bool,
    pub switchable_plan_ids: Vec<Uuid>,
    pub update_authorized_limit: bool,
    pub update_payment_method: bool,
}

impl Default for PortalSettings {
    /// A customer can always leave (cancel, now or at period end) and fix their card;
    /// the rest is the merchant's choice.
    fn default() -> Self {
        PortalSettings {
            pause: false,
            cancel: true,
            cancel_at_period_end: true,
            switch_plan: false,
            switchable_plan_ids: vec![],
            update_authorized_limit: false,
            update_payment_method: true,
        }
    }
}

/// `GET /v1/settings`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MerchantSettings {
    /// Origins (`https://shop.example`) allowed to frame the checkout.
    pub allowed_origins: Vec<String>,
    pub portal: PortalSettings,
    /// `null` until the settings are first changed.
    pub updated_at: Option<DateTime<Utc>>,
}

/// `PATCH /v1/settings`: what is given changes, the rest stays.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateSettings {
    pub allowed_origins: Option<Vec<String>>,
    pub portal: Option<UpdatePortal>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePortal {
    pub pause: Option<bool>,
    pub cancel: Option<bool>,
    pub cancel_at_period_end: Option<bool>,
    pub switch_plan: Option<bool>,
    pub switchable_plan_ids: Option<Vec<Uuid>>,
    pub update_authorized_limit: Option<bool>,
    pub update_payment_method: Option<bool>,
}

/// An origin as a browser sends it: `scheme://host[:port]`, nothing else.
/// `https` is required except for sandbox merchants and loopback hosts.
pub fn parse_origin(raw: &str, sandbox: bool) -> std::result::Result<String, &'static str> {
    let url = url::Url::parse(raw).map_err(|_| "must be an origin such as https://shop.example")?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http or https origin such as https://shop.example");
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err("must be an origin only: no credentials, query or fragment");
    }
    if url.path() != "/" {
        return Err("must be an origin only, without a path");
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() == "http" && !sandbox && !loopback {
        return Err("must be https for a live merchant");
    }
    Ok(url.origin().ascii_serialization())
}

impl UpdateSettings {
    /// Check the request; every bad field is named. Plan ids are checked against the
    /// merchant's plans in [`update`].
    pub fn validate(mut self, sandbox: bool) -> Result<UpdateSettings> {
        let mut e = Errors::new();
        if let Some(origins) = &mut self.allowed_origins {
            if origins.len() > MAX_ORIGINS {
                e.push(FieldError::new("allowedOrigins", format!("at most {MAX_ORIGINS} origins")));
            }
            let mut seen = Vec::new();
            for (i, o) in origins.iter_mut().enumerate() {
                match parse_origin(o, sandbox) {
                    Ok(normal) if seen.contains(&normal) => {
                        e.push(FieldError::new(format!("allowedOrigins[{i}]"), "is listed twice"))
                    }
                    Ok(normal) => {
                        seen.push(normal.clone());
                        *o = normal;
                    }
                    Err(m) => e.push(FieldError::new(format!("allowedOrigins[{i}]"), m)),
                }
            }
        }
        if let Some(ids) = self.portal.as_ref().and_then(|p| p.switchable_plan_ids.as_ref()) {
            if ids.len() > MAX_SWITCHABLE_PLANS {
                e.push(FieldError::new("portal.switchablePlanIds", format!("at most {MAX_SWITCHABLE_PLANS} plans")));
            }
            for (i, id) in ids.iter().enumerate() {
                if ids[..i].contains(id) {
                    e.push(FieldError::new(format!("portal.switchablePlanIds[{i}]"), "is listed twice"));
                }
            }
        }
        crate::validate::finish(e)?;
        Ok(self)
    }
}

pub async fn get(conn: &mut PgConnection, merchant_id: Uuid) -> Result<MerchantSettings> {
    let row = sqlx::query!(
        "SELECT allowed_origins, portal_pause, portal_cancel, portal_cancel_at_period_end, portal_switch_plan,
             portal_switchable_plan_ids, portal_update_authorized_limit, portal_update_payment_method, updated_at
         FROM merchant_settings WHERE merchant_id = $1",
        merchant_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => MerchantSettings::default(),
        Some(r) => MerchantSettings {
            allowed_origins: r.allowed_origins,
            portal: PortalSettings {
                pause: r.portal_pause,
                cancel: r.portal_cancel,
                cancel_at_period_end: r.portal_cancel_at_period_end,
                switch_plan: r.portal_switch_plan,
                switchable_plan_ids: r.portal_switchable_plan_ids,
                update_authorized_limit: r.portal_update_authorized_limit,
                update_payment_method: r.portal_update_payment_method,
            },
            updated_at: Some(r.updated_at),
        },
    })
}

/// Apply a checked change, with its event (object `settings`, id the merchant's).
pub async fn update(conn: &mut PgConnection, merchant_id: Uuid, req: UpdateSettings) -> Result<MerchantSettings> {
    // Serialises concurrent changes of one merchant's settings.
    sqlx::query!(
        "INSERT INTO merchant_settings (merchant_id) VALUES ($1) ON CONFLICT (merchant_id) DO NOTHING",
        merchant_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("SELECT merchant_id FROM merchant_settings WHERE merchant_id = $1 FOR UPDATE", merchant_id)
        .fetch_one(&mut *conn)
        .await?;
    let mut s = get(conn, merchant_id).await?;
    let mut changed = Map::new();
    if let Some(origins) = req.allowed_origins {
        changed.insert("allowedOrigins".into(), json!(origins));
        s.allowed_origins = origins;
    }
    if let Some(p) = req.portal {
        if let Some(ids) = &p.switchable_plan_ids {
            let found = sqlx::query_scalar!(
                "SELECT id FROM plans WHERE merchant_id = $1 AND id = ANY($2)",
                merchant_id,
                ids as &[Uuid]
            )
            .fetch_all(&mut *conn)
            .await?;
            let missing: Vec<FieldError> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| !found.contains(id))
                .map(|(i, _)| FieldError::new(format!("portal.switchablePlanIds[{i}]"), "no such plan"))
                .collect();
            if !missing.is_empty() {
                return Err(Error::Validation(missing));
            }
        }
        let portal = &mut s.portal;
        for (name, given, field) in [
            ("pause", p.pause, &mut portal.pause),
            ("cancel", p.cancel, &mut portal.cancel),
            ("cancelAtPeriodEnd", p.cancel_at_period_end, &mut portal.cancel_at_period_end),
            ("switchPlan", p.switch_plan, &mut portal.switch_plan),
            ("updateAuthorizedLimit", p.update_authorized_limit, &mut portal.update_authorized_limit),
            ("updatePaymentMethod", p.update_payment_method, &mut portal.update_payment_method),
        ] {
            if let Some(v) = given {
                changed.insert(format!("portal.{name}"), json!(v));
                *field = v;
            }
        }
        if let Some(ids) = p.switchable_plan_ids {
            changed.insert("portal.switchablePlanIds".into(), json!(ids));
            portal.switchable_plan_ids = ids;
        }
    }
    let p = &s.portal;
    let updated_at = sqlx::query_scalar!(
        "UPDATE merchant_settings SET allowed_origins = $2, portal_pause = $3, portal_cancel = $4,
             portal_cancel_at_period_end = $5, portal_switch_plan = $6, portal_switchable_plan_ids = $7,
             portal_update_authorized_limit = $8, portal_update_payment_method = $9
         WHERE merchant_id = $1 RETURNING updated_at",
        merchant_id,
        &s.allowed_origins,
        p.pause,
        p.cancel,
        p.cancel_at_period_end,
        p.switch_plan,
        &p.switchable_plan_ids,
        p.update_authorized_limit,
        p.update_payment_method,
    )
    .fetch_one(&mut *conn)
    .await?;
    s.updated_at = Some(updated_at);
    if !changed.is_empty() {
        events::record_one(
            conn,
            NewEvent::new(merchant_id, "settings", merchant_id, "updated", Value::Object(changed), Actor::Merchant),
        )
        .await?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(parse_origin("https://shop.example", false).unwrap(), "https://shop.example");
        assert_eq!(parse_origin("https://shop.example/", false).unwrap(), "https://shop.example");
        assert_eq!(parse_origin("HTTPS://Shop.Example:8443", false).unwrap(), "https://shop.example:8443");
        assert_eq!(parse_origin("http://localhost:3000", false).unwrap(), "http://localhost:3000");
        assert!(parse_origin("http://shop.example", false).is_err());
        assert!(parse_origin("http://shop.example", true).is_ok());
        for bad in ["https://shop.example/path", "https://u:p@shop.example", "https://x?q=1", "*", "shop.example", ""] {
            assert!(parse_origin(bad, true).is_err(), "{bad}");
        }
    }
}
