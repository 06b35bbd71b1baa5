//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "recur", description = "Recurring and merchant-initiated card charges"),
    paths(
        plans::create, plans::list, plans::get, plans::update, plans::delete, plans::activate, plans::archive,
        subscriptions::create, subscriptions::list, subscriptions::get, subscriptions::update, subscriptions::delete,
        subscriptions::pause, subscriptions::resume, subscriptions::cancel, subscriptions::change,
        subscriptions::change_preview, test_clocks::create, test_clocks::list, test_clocks::get, test_clocks::advance,
        billing::list_cycles, billing::get_cycle, billing::retry_cycle, billing::payment_link, billing::get_transaction,
        series::create, series::list, series::get, series::cancel, series::create_transaction,
        customers::get, customers::events,
        admin::create_merchant, admin::get_clock, admin::move_clock, admin::sandbox_charges,
        merchants::get, merchants::update,
        ops::queues, ops::list, ops::replay, ops::drain,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete, webhooks::rotate_secret,
        webhooks::deliveries, webhooks::retry, webhooks::replay,
        settings::get, settings::update, checkout::create, checkout::list, checkout::get,
        portal::create,
        health::healthz, health::readyz, serve,
    ),
    modifiers(&Security, &Metrics, &ProblemMediaType, &WebhookTypes, &RateLimited),
    security(("basic" = [], "apiKey" = [])),
)]
pub struct Doc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme("basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
        c.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-KEY"))));
        c.add_security_scheme("admin", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// `/metrics` is served by `telemetry::render`; it is described here so the document
/// covers every route of the router.
struct Metrics;

impl Modify for Metrics {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder};
        use utoipa::openapi::{ContentBuilder, ResponseBuilder, ResponsesBuilder, security::SecurityRequirement};
        let ok = ResponseBuilder::new()
            .description("Prometheus text exposition format")
            .content("text/plain", ContentBuilder::new().build())
            .build();
        let op = OperationBuilder::new()
            .tag("health")
            .operation_id(Some("metrics"))
            .summary(Some("Prometheus metrics of this process"))
            .responses(ResponsesBuilder::new().response("200", ok).build())
            .security(SecurityRequirement::default())
            .build();
        doc.paths.add_path_operation("/metrics", vec![HttpMethod::Get], op);
    }
}

/// The event types a webhook endpoint may subscribe to (docs/webhooks.md#event-types),
/// as the schema `WebhookEventType`.
struct WebhookTypes;

impl Modify for WebhookTypes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let types = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Every event type recur sends; endpoints may also name `<object>.*` or `*`."))
            .enum_values(Some(crate::webhooks::types::ALL.iter().copied()))
            .build();
        doc.components.get_or_insert_with(Default::default).schemas.insert("WebhookEventType".into(), types.into());
    }
}

/// Error responses are RFC 9457 problems sent as `application/problem+json`
/// (`Problem::into_response_with`); utoipa documents every `body = Problem` as
/// `application/json`, so the document would contradict the wire.
struct ProblemMediaType;

impl Modify for ProblemMediaType {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                for response in op.responses.responses.values_mut() {
                    let RefOr::T(response) = response else { continue };
                    let is_problem = |c: &utoipa::openapi::Content| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"));
                    if let Some(content) = response.content.get("application/json").filter(|c| is_problem(c)).cloned() {
                        response.content.shift_remove("application/json");
                        response.content.insert("application/problem+json".to_owned(), content);
                    }
                }
            }
        }
    }
}

/// Every `/v1` and `/admin` operation may answer 429 (docs/operations.md#rate-limits):
/// documented once here rather than on each handler.
struct RateLimited;

impl Modify for RateLimited {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description(
                "Too many requests: a rate limit or too many failed authentications (`Retry-After` says \
                 when to retry; docs/operations.md#rate-limits)",
            )
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            if !(path.starts_with("/v1/") || path.starts_with("/admin/")) {
                continue;
            }
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                op.responses.responses.entry("429".to_owned()).or_insert_with(|| response.clone().into());
            }
        }
    }
}

#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(Doc::openapi())
}
