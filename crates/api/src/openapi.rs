//! The API's description, OpenAPI 3.1, served at `GET /api/mcp/openapi.json`, and Swagger UI at
//! `GET /api/mcp/docs` (its files compiled in: nothing is fetched at build or run time).
//!
//! The document is generated, never written by hand: the paths, parameters and statuses come from
//! the `#[utoipa::path]` attribute on each handler in `routes.rs` (and here, for the
//! documentation's own routes), the bodies from the wire types in `dto.rs` and the domain's
//! `SessionView`, and the error answers from the result codes themselves: `ResultCode::ALL` with
//! `error::status_of`, plus [`API_CODES`], the API's own codes. The tests below check that every
//! error `error.rs` can produce is described, and that every resource `routes.rs` mounts is a path
//! of the document.

use std::borrow::Cow;
use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use tether_domain::ResultCode;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, Object, ObjectBuilder, Ref, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Required};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use crate::error::{ApiError, status_of};
use crate::routes::{read, resource};

/// The codes the API answers with when the contract has none, and their status (see `error.rs`).
pub const API_CODES: [(&str, StatusCode); 8] = [
    ("invalid_request", StatusCode::BAD_REQUEST),
    ("unauthorized", StatusCode::UNAUTHORIZED),
    ("origin_not_allowed", StatusCode::FORBIDDEN),
    ("not_found", StatusCode::NOT_FOUND),
    ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
    ("request_timeout", StatusCode::REQUEST_TIMEOUT),
    ("session_exists", StatusCode::CONFLICT),
    ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
];

/// Name of the API-key security scheme (`Authorization: Bearer <key>`).
pub const API_KEY: &str = "api_key";
/// Name of the WebSocket-ticket security scheme (`?ticket=`, from `POST /ws/ticket`).
pub const TICKET: &str = "ticket";

/// The description: what the `#[utoipa::path]` attributes and the wire types say, then
/// [`Contract`] adds what attributes cannot (security schemes, the codes' table, closed objects).
#[derive(OpenApi)]
#[openapi(
    info(title = "Tether"),
    paths(
        crate::routes::health,
        crate::routes::create,
        crate::routes::list,
        crate::routes::get,
        crate::routes::disconnect,
        crate::routes::activity,
        crate::routes::token,
        crate::routes::reconnect,
        crate::routes::ws_ticket,
        crate::routes::ws_sessions,
        openapi_json,
        docs,
        swagger_css,
        swagger_bundle,
        swagger_initializer,
    ),
    components(
        schemas(ErrorCode, ErrorBody),
        responses(
            InvalidRequest,
            NotActive,
            Unauthorized,
            ReconnectRefused,
            OriginNotAllowed,
            SessionNotFound,
            NoRoute,
            MethodNotAllowed,
            RequestTimeout,
            SessionExists,
            AlreadyDisconnected,
            PayloadTooLarge,
            RateLimited,
            InternalError,
            DatabaseUnavailable,
        )
    ),
    security(("api_key" = [])),
    modifiers(&Contract),
    tags(
        (name = "sessions", description = "The session registry (API key)."),
        (name = "reconnect", description = "Resuming a session with its single-use reconnect token (no API key: the token is the credential)."),
        (name = "monitoring", description = "The dashboards' WebSocket stream and its tickets."),
        (name = "health", description = "Liveness and the database's state (public)."),
        (name = "documentation", description = "This description and Swagger UI (public)."),
    )
)]
pub struct ApiDoc;

/// Mounts the documentation's routes; called inside the `/api/mcp` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Serialized once per worker rather than per request: the document never changes while the
    // process runs, and a public route should cost next to nothing.
    let document = match ApiDoc::openapi().to_json() {
        Ok(json) => Some(web::Bytes::from(json)),
        Err(e) => {
            tracing::error!(error = %e, "the API description does not serialize");
            None
        }
    };
    cfg.service(
        resource("/openapi.json", "GET, HEAD")
            .route(read().to(move || openapi_json(document.clone()))),
    )
    .service(resource("/docs", "GET, HEAD").route(read().to(docs)))
    .service(resource("/docs/swagger-ui.css", "GET, HEAD").route(read().to(swagger_css)))
    .service(resource("/docs/swagger-ui-bundle.js", "GET, HEAD").route(read().to(swagger_bundle)))
    .service(
        resource("/docs/swagger-initializer.js", "GET, HEAD").route(read().to(swagger_initializer)),
    );
}

/// This description (OpenAPI 3.1), generated from the code.
#[utoipa::path(
    get,
    path = "/api/mcp/openapi.json",
    tag = "documentation",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = Object),
        (status = 500, response = InternalError),
    )
)]
pub async fn openapi_json(document: Option<web::Bytes>) -> Result<HttpResponse, ApiError> {
    let document = document.ok_or_else(|| {
        ApiError::Domain(tether_domain::Error::Internal(
            "the API description does not serialize".into(),
        ))
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(document))
}

/// Swagger UI over this description; its scripts and styles are served from the binary.
#[utoipa::path(
    get,
    path = "/api/mcp/docs",
    tag = "documentation",
    security(()),
    responses((status = 200, description = "Swagger UI's page.", body = String, content_type = "text/html"))
)]
pub async fn docs() -> HttpResponse {
    let mut page = asset(
        "text/html; charset=utf-8",
        include_bytes!("../assets/swagger-ui/index.html"),
    );
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    page
}

/// The page loads only its own files and talks only to its own origin ("Try it out" included).
/// Swagger UI's style sheet draws its icons as `data:` images and its components set inline
/// styles.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                           img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                           form-action 'none'; frame-ancestors 'none'";

/// Swagger UI's style sheet (swagger-ui-dist, Apache-2.0; `assets/swagger-ui/LICENSE`).
#[utoipa::path(
    get,
    path = "/api/mcp/docs/swagger-ui.css",
    tag = "documentation",
    security(()),
    responses((status = 200, description = "The style sheet.", body = String, content_type = "text/css"))
)]
pub async fn swagger_css() -> HttpResponse {
    asset(
        "text/css; charset=utf-8",
        include_bytes!("../assets/swagger-ui/swagger-ui.css"),
    )
}

/// Swagger UI itself (swagger-ui-dist, Apache-2.0; `assets/swagger-ui/LICENSE`).
#[utoipa::path(
    get,
    path = "/api/mcp/docs/swagger-ui-bundle.js",
    tag = "documentation",
    security(()),
    responses((status = 200, description = "The script.", body = String, content_type = "text/javascript"))
)]
pub async fn swagger_bundle() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js"),
    )
}

/// Starts Swagger UI on `openapi.json` (a file rather than an inline script, so that the page
/// works under a `script-src 'self'` policy).
#[utoipa::path(
    get,
    path = "/api/mcp/docs/swagger-initializer.js",
    tag = "documentation",
    security(()),
    responses((status = 200, description = "The script.", body = String, content_type = "text/javascript"))
)]
pub async fn swagger_initializer() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/swagger-ui/swagger-initializer.js"),
    )
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok().content_type(content_type).body(bytes)
}

/// The contract's codes answered with `status` (as `error::status_of` maps them).
fn contract_codes(status: StatusCode) -> impl Iterator<Item = &'static str> {
    ResultCode::ALL
        .into_iter()
        .filter(move |c| *c != ResultCode::Reconnected && status_of(*c) == status)
        .map(ResultCode::as_str)
}

/// The API's own codes answered with `status`.
fn api_codes(status: StatusCode) -> impl Iterator<Item = &'static str> {
    API_CODES
        .into_iter()
        .filter(move |(_, s)| *s == status)
        .map(|(code, _)| code)
}

/// One kind of error answer: its status, the codes its body may carry, a header it always has.
pub struct ErrorAnswer {
    /// Component name.
    pub name: &'static str,
    /// HTTP status.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests hold each operation's status to it")
    )]
    pub status: StatusCode,
    /// The `code`s its body may carry.
    pub codes: Vec<&'static str>,
    /// What it means.
    pub description: &'static str,
    /// A header it always carries: name, description, schema.
    pub header: Option<(&'static str, &'static str, Object)>,
}

impl ErrorAnswer {
    /// An answer; `error_answers!` names it after its type.
    fn new(
        status: StatusCode,
        codes: impl IntoIterator<Item = &'static str>,
        description: &'static str,
    ) -> Self {
        Self {
            name: "",
            status,
            codes: codes.into_iter().collect(),
            description,
            header: None,
        }
    }

    fn with_header(
        mut self,
        name: &'static str,
        description: &'static str,
        schema: Object,
    ) -> Self {
        self.header = Some((name, description, schema));
        self
    }

    /// The response object: the error body with `code` narrowed to this answer's codes.
    pub fn response(&self) -> Response {
        let narrowed = ObjectBuilder::new().property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(self.codes.iter().copied())),
        );
        let schema = AllOfBuilder::new()
            .item(Ref::from_schema_name(ErrorBody::name()))
            .item(narrowed);
        let mut reply = ResponseBuilder::new()
            .description(self.description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            );
        if let Some((name, description, schema)) = &self.header {
            reply = reply.header(*name, required_header(description, schema.clone()));
        }
        reply.build()
    }
}

/// A response header that is always sent. utoipa's `Header` has no `required` field (OpenAPI's
/// Header Object has), so it goes in through the map of extensions, which is serialized flat.
fn required_header(description: &str, schema: Object) -> Header {
    let mut header = HeaderBuilder::new()
        .schema(Some(schema))
        .description(Some(description))
        .build();
    header
        .extensions
        .get_or_insert_with(Default::default)
        .insert("required".to_owned(), true.into());
    header
}

fn string_header(pattern: Option<&str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .build()
}

/// What a 401's `WWW-Authenticate` says.
const BEARER: &str = "The scheme wanted (RFC 6750): `Bearer realm=\"tether\"`.";

/// Declares the error answers: a unit type per answer, usable as `response = Name` in
/// `#[utoipa::path]`, and `answers()` listing them all (for the tests).
macro_rules! error_answers {
    ($($(#[doc = $doc:literal])* $name:ident => $answer:expr;)*) => {
        $(
            $(#[doc = $doc])*
            pub struct $name;

            impl $name {
                fn answer() -> ErrorAnswer {
                    ErrorAnswer {
                        name: stringify!($name),
                        ..$answer
                    }
                }
            }

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    let answer = Self::answer();
                    (answer.name, RefOr::T(answer.response()))
                }
            }
        )*

        /// Every error answer the description has.
        #[cfg(test)]
        pub fn answers() -> Vec<ErrorAnswer> {
            vec![$($name::answer()),*]
        }
    };
}

error_answers! {
    /// 400 `invalid_request`.
    InvalidRequest => ErrorAnswer::new(
        StatusCode::BAD_REQUEST, api_codes(StatusCode::BAD_REQUEST),
        "Malformed input: a body that is not a JSON object of the documented fields (unknown \
         fields included), a parameter out of its bounds, a bad session id.",
    );
    /// 400 on `/token`: `invalid_request`, or `session_already_disconnected` (the legacy contract).
    NotActive => ErrorAnswer::new(
        StatusCode::BAD_REQUEST,
        api_codes(StatusCode::BAD_REQUEST)
            .chain([ResultCode::SessionAlreadyDisconnected.as_str()]),
        "`session_already_disconnected`: the session has ended (400 here, as the legacy contract \
         had it); or `invalid_request` for a bad session id.",
    );
    /// 401 `unauthorized`, with `WWW-Authenticate`.
    Unauthorized => ErrorAnswer::new(
        StatusCode::UNAUTHORIZED, api_codes(StatusCode::UNAUTHORIZED),
        "Missing or wrong API key (or WebSocket ticket).",
    ).with_header("WWW-Authenticate", BEARER, string_header(Some("^Bearer")));
    /// 401 for a refused reconnect token, with `WWW-Authenticate`.
    ReconnectRefused => ErrorAnswer::new(
        StatusCode::UNAUTHORIZED, contract_codes(StatusCode::UNAUTHORIZED),
        "The token was refused; `detail` is `Reconnection failed: <code>`. `token_reused`: an \
         already-consumed token, and the session's live token is revoked as well.",
    ).with_header("WWW-Authenticate", BEARER, string_header(Some("^Bearer")));
    /// 403 `origin_not_allowed`.
    OriginNotAllowed => ErrorAnswer::new(
        StatusCode::FORBIDDEN, api_codes(StatusCode::FORBIDDEN),
        "The browser's `Origin` is not in `ws.allowed_origins`.",
    );
    /// 404 `session_not_found` (or `not_found` when the id is empty, which names no route).
    SessionNotFound => ErrorAnswer::new(
        StatusCode::NOT_FOUND,
        contract_codes(StatusCode::NOT_FOUND).chain(api_codes(StatusCode::NOT_FOUND)),
        "`session_not_found`: no session has this id. (`not_found` when the id is empty: the \
         path then names no route.)",
    );
    /// 404 `not_found`: a path that is no route.
    NoRoute => ErrorAnswer::new(
        StatusCode::NOT_FOUND, api_codes(StatusCode::NOT_FOUND),
        "No such route (any path not in this document).",
    );
    /// 405 `method_not_allowed`, with `Allow`.
    MethodNotAllowed => ErrorAnswer::new(
        StatusCode::METHOD_NOT_ALLOWED, api_codes(StatusCode::METHOD_NOT_ALLOWED),
        "A method the path does not serve (any method not in this document but `HEAD` where \
         `GET` is).",
    ).with_header("Allow", "The methods the path serves.", string_header(None));
    /// 408 `request_timeout`.
    RequestTimeout => ErrorAnswer::new(
        StatusCode::REQUEST_TIMEOUT, api_codes(StatusCode::REQUEST_TIMEOUT),
        "The body did not arrive within `server.body_timeout_ms`.",
    );
    /// 409 `session_exists`.
    SessionExists => ErrorAnswer::new(
        StatusCode::CONFLICT, api_codes(StatusCode::CONFLICT),
        "A session with this id exists already.",
    );
    /// 409 `session_already_disconnected`.
    AlreadyDisconnected => ErrorAnswer::new(
        StatusCode::CONFLICT, contract_codes(StatusCode::CONFLICT),
        "The session has ended; it cannot be resumed or changed.",
    );
    /// 413 `payload_too_large`.
    PayloadTooLarge => ErrorAnswer::new(
        StatusCode::PAYLOAD_TOO_LARGE, api_codes(StatusCode::PAYLOAD_TOO_LARGE),
        "The body is over 64 KiB.",
    );
    /// 429 `rate_limited`, with `Retry-After`.
    RateLimited => ErrorAnswer::new(
        StatusCode::TOO_MANY_REQUESTS, contract_codes(StatusCode::TOO_MANY_REQUESTS),
        "Over a rate limit (`limits.*`); an address over its failed-key budget is refused even \
         with the right key until the budget refills.",
    ).with_header(
        "Retry-After",
        "Seconds until a retry may succeed.",
        ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).build(),
    );
    /// 500 `internal_error`.
    InternalError => ErrorAnswer::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        contract_codes(StatusCode::INTERNAL_SERVER_ERROR),
        "An unexpected failure, logged server-side; the body never carries internals.",
    );
    /// 503 `database_unavailable`.
    DatabaseUnavailable => ErrorAnswer::new(
        StatusCode::SERVICE_UNAVAILABLE,
        contract_codes(StatusCode::SERVICE_UNAVAILABLE),
        "The database did not answer within `database.timeout_ms`; retry later.",
    );
}

/// The schema named `ResultCode`: every code a response can carry, the contract's (from
/// `ResultCode::ALL`) and the API's own ([`API_CODES`]).
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let mut table = String::from(
            "Every result code. `reconnected` is the success of a reconnect; the others are \
             the `code` of an error body.\n\n| code | status |\n|---|---|\n",
        );
        let mut codes = Vec::new();
        for code in ResultCode::ALL {
            let _ = writeln!(table, "| `{code}` | {} |", status_of(code).as_u16());
            codes.push(code.as_str());
        }
        for (code, status) in API_CODES {
            let _ = writeln!(table, "| `{code}` | {} |", status.as_u16());
            codes.push(code);
        }
        table.push_str(
            "\n`session_already_disconnected` is 400 on `/sessions/{id}/token` (the legacy \
             contract), 409 elsewhere.",
        );
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(codes))
            .description(Some(table))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ResultCode")
    }
}

/// The schema named `Error`: `{"success": false, "code", "detail"}` (the body `error.rs` writes).
pub struct ErrorBody;

impl PartialSchema for ErrorBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "success",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([false])),
            )
            .required("success")
            .property("code", Ref::from_schema_name(ErrorCode::name()))
            .required("code")
            .property(
                "detail",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "Human text; `Reconnection failed: <code>` for a reconnect.",
                    )),
            )
            .required("detail")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for ErrorBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Error")
    }
}

/// What the attributes cannot say: the security schemes, unique operation ids, closed response
/// objects, and the overview in `info.description`.
struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <API key>` (`MCP_API_KEY`; generated and printed \
                         at start when unset).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            TICKET,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from `POST /ws/ticket`, for browsers (which cannot set \
                 headers on a WebSocket).",
            ))),
        );
        // Every response object lists all its fields: the server never sends others (no token
        // hash ever reaches a response), so the description says so and checkers hold it to that.
        for schema in components.schemas.values_mut() {
            if let RefOr::T(Schema::Object(object)) = schema
                && !object.properties.is_empty()
                && object.additional_properties.is_none()
            {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
        unique_operation_ids(doc);
        optional_bodies(doc);
        path_parameters_required(doc);
        doc.info.description = Some(overview());
    }
}

/// A handler that serves two methods (`GET` and `POST /token`) gets one id from utoipa; OpenAPI
/// wants each operation's id unique, so such ids get the method as a suffix.
fn unique_operation_ids(doc: &mut Document) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in doc.paths.paths.values() {
        for (_, op) in operations(item) {
            if let Some(id) = &op.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
    }
    for item in doc.paths.paths.values_mut() {
        for (method, op) in operations_mut(item) {
            if let Some(id) = op.operation_id.as_mut()
                && seen.get(id.as_str()).is_some_and(|n| *n > 1)
            {
                id.push('_');
                id.push_str(method);
            }
        }
    }
}

/// A body that may be left out (`DELETE /sessions/{id}`) is not a body that may be `null`: the
/// server refuses a JSON `null` like anything that is not an object. utoipa spells `Option<T>` as
/// "T or null"; the body's schema keeps T, and `required` stays unset.
fn optional_bodies(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations_mut(item) {
            let Some(RefOr::T(body)) = op.request_body.as_mut() else {
                continue;
            };
            for content in body.content.values_mut() {
                let RefOr::T(content) = content else {
                    continue;
                };
                if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                    let kept: Vec<_> = one_of.items.iter().filter(|s| !is_null(s)).collect();
                    if let [only] = kept.as_slice() {
                        content.schema = Some((*only).clone());
                    }
                }
            }
        }
    }
}

/// OpenAPI wants every path parameter `required`; utoipa drops the flag of one whose schema comes
/// from `schema_with` (the session id, whose schema is the domain's).
fn path_parameters_required(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations_mut(item) {
            for param in op.parameters.iter_mut().flatten() {
                if let RefOr::T(param) = param
                    && param.parameter_in == ParameterIn::Path
                {
                    param.required = Required::True;
                }
            }
        }
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}

/// The operations of a path item, with their method's name.
pub fn operations(item: &utoipa::openapi::PathItem) -> Vec<(&'static str, &Operation)> {
    [
        ("get", &item.get),
        ("put", &item.put),
        ("post", &item.post),
        ("delete", &item.delete),
        ("options", &item.options),
        ("head", &item.head),
        ("patch", &item.patch),
        ("trace", &item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
    .collect()
}

fn operations_mut(item: &mut utoipa::openapi::PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
    .collect()
}

/// `info.description`: what holds for every operation.
fn overview() -> String {
    let mut text = String::from(
        "Tether keeps MCP client sessions alive across network glitches: a client that lost its \
         connection resumes its session with a single-use reconnect token (`POST \
         /api/mcp/sessions/{id}/reconnect`), and gets the next token in the answer.\n\n\
         **Credentials.** Management calls need `Authorization: Bearer <API key>`. `reconnect` \
         needs none (the token is the credential); `health` and this documentation are public. \
         The dashboard stream takes the key or a `?ticket=`.\n\n\
         **Bodies** are JSON objects (the `Content-Type` is not required) of at most 64 KiB; \
         unknown fields are refused. Times are RFC 3339 UTC with microseconds.\n\n\
         **Errors** are `{\"success\": false, \"code\", \"detail\"}` (schema `Error`); `code` is \
         one of `ResultCode`:\n\n| code | status |\n|---|---|\n",
    );
    for code in ResultCode::ALL
        .into_iter()
        .filter(|c| *c != ResultCode::Reconnected)
    {
        let _ = writeln!(text, "| `{code}` | {} |", status_of(code).as_u16());
    }
    for (code, status) in API_CODES {
        let _ = writeln!(text, "| `{code}` | {} |", status.as_u16());
    }
    text.push_str(
        "\nEvery 401 carries `WWW-Authenticate: Bearer`, every 429 `Retry-After` (seconds), every \
         405 `Allow`. A path that is no route answers 404 `not_found`; a method a path does not \
         serve, 405 `method_not_allowed`. `HEAD` works wherever `GET` does (but on the \
         WebSocket). A request whose head does not arrive within `server.header_timeout_ms` is \
         answered 408 and its connection closed. Every response carries `Cache-Control: \
         no-store` and `X-Content-Type-Options: nosniff`.\n\n\
         **Rate limits** (`limits.*`, per minute) apply to reconnects, failed keys, token mints, \
         tickets, session creations and dashboard connections: 429 `rate_limited`.\n\n\
         **The dashboard stream** (`GET /api/mcp/ws/sessions`, a WebSocket) sends one JSON object \
         per message: `type`, `seq`, `timestamp`, `data`, and `session_id` for session events \
         (`session_created`, `session_updated`, `session_disconnected`, `token_reused`), \
         `health_update` every `ws.health_interval_ms`, and `resumed` after a replay.\n\n\
         Not described here: the MCP endpoint (`/mcp`, JSON-RPC over streamable HTTP, described \
         by the MCP protocol), the Prometheus metrics (`/metrics`) and the dashboard page (`/`).",
    );
    text
}

/// A string schema whose value is one of `values`.
fn strings(values: &[&'static str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// `Health.status` (see `routes::health`).
pub fn health_status() -> Object {
    strings(&["ok", "degraded"])
}

/// `Health.database`.
pub fn health_database() -> Object {
    strings(&["ok", "unavailable"])
}

/// `Health.backend`.
pub fn health_backend() -> Object {
    strings(&["sqlite", "postgres"])
}

/// The `status` filter of `GET /sessions`: a session status, or empty for none (as if absent).
pub fn status_filter() -> Object {
    let mut schema = tether_domain::openapi::status_schema();
    schema
        .enum_values
        .get_or_insert_with(Vec::new)
        .push("".into());
    schema.description = Some("Only sessions in this state; empty or absent: all.".into());
    schema
}

/// `Reconnected.success`: always true.
pub fn always_true() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

/// `Reconnected.message`.
pub fn reconnected_message() -> Object {
    strings(&["Session reconnected"])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::collections::BTreeSet;
    use std::time::Duration;

    use actix_web::ResponseError as _;
    use serde_json::Value;
    use tether_domain::Error as DomainError;

    use super::*;
    use crate::error::ApiError;

    fn doc() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// One error of each kind `error.rs` answers.
    fn every_error() -> Vec<ApiError> {
        let mut all = vec![
            ApiError::Domain(DomainError::invalid("field", "reason")),
            ApiError::Domain(DomainError::NotFound),
            ApiError::Domain(DomainError::AlreadyExists),
            ApiError::Domain(DomainError::AlreadyDisconnected),
            ApiError::Domain(DomainError::Policy("policy".into())),
            ApiError::Domain(DomainError::Unavailable("down".into())),
            ApiError::Domain(DomainError::Internal("broken".into())),
            ApiError::BadRequest("bad".into()),
            ApiError::Unauthorized,
            ApiError::PayloadTooLarge(1),
            ApiError::NotActive,
            ApiError::NoRoute,
            ApiError::OriginNotAllowed,
            ApiError::RateLimited(Duration::from_millis(1500), Duration::ZERO),
            ApiError::RequestTimeout,
            ApiError::MethodNotAllowed("GET, HEAD"),
        ];
        // A refused reconnect carries any code but these two: success is no error, and a limited
        // reconnect is `ApiError::RateLimited` (with its `Retry-After`).
        for code in ResultCode::ALL {
            if !matches!(code, ResultCode::Reconnected | ResultCode::RateLimited) {
                all.push(ApiError::Domain(DomainError::Reconnect(code)));
                all.push(ApiError::ReconnectFailed(code));
            }
        }
        // No wildcard: a new variant fails to compile here, so that it is added to the list above
        // (and, if it has a code of its own, to `API_CODES`).
        for e in &all {
            match e {
                ApiError::Domain(
                    DomainError::Invalid { .. }
                    | DomainError::NotFound
                    | DomainError::AlreadyExists
                    | DomainError::AlreadyDisconnected
                    | DomainError::Reconnect(_)
                    | DomainError::Policy(_)
                    | DomainError::Unavailable(_)
                    | DomainError::Internal(_),
                )
                | ApiError::BadRequest(_)
                | ApiError::Unauthorized
                | ApiError::PayloadTooLarge(_)
                | ApiError::NotActive
                | ApiError::NoRoute
                | ApiError::OriginNotAllowed
                | ApiError::RateLimited(..)
                | ApiError::RequestTimeout
                | ApiError::MethodNotAllowed(_)
                | ApiError::ReconnectFailed(_) => {}
            }
        }
        all
    }

    /// Status, code and header names of what `error.rs` sends for `e`.
    fn sent(e: &ApiError) -> (StatusCode, String, BTreeSet<String>) {
        let reply = e.error_response();
        let status = reply.status();
        let headers = reply
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(actix_web::body::to_bytes(reply.into_body()))
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["success", "code", "detail"], "{e:?}: {body}");
        assert_eq!(body["success"], false);
        assert!(body["detail"].is_string());
        (status, body["code"].as_str().unwrap().to_owned(), headers)
    }

    #[test]
    fn every_error_the_api_sends_is_described() {
        let answers = answers();
        let doc = doc();
        let all_codes = &doc["components"]["schemas"]["ResultCode"]["enum"];
        let mut used = BTreeSet::new();
        for e in every_error() {
            let (status, code, headers) = sent(&e);
            assert!(
                all_codes
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c == code.as_str()),
                "{code} is not in ResultCode"
            );
            let described: Vec<&ErrorAnswer> = answers
                .iter()
                .filter(|a| a.status == status && a.codes.contains(&code.as_str()))
                .collect();
            assert!(
                !described.is_empty(),
                "{e:?}: {status} {code} has no answer"
            );
            for answer in described {
                used.insert((answer.status, code.clone()));
                if let Some((name, _, _)) = &answer.header {
                    assert!(
                        headers.contains(&name.to_ascii_lowercase()),
                        "{e:?}: {name} missing"
                    );
                }
            }
        }
        // And nothing described that is never sent.
        for answer in &answers {
            for code in &answer.codes {
                assert!(
                    used.contains(&(answer.status, (*code).to_owned())),
                    "{}: {} {code} is never sent",
                    answer.name,
                    answer.status
                );
            }
        }
    }

    #[test]
    fn each_operation_answers_errors_under_their_status() {
        let answers = answers();
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let Some(target) = response["$ref"].as_str() else {
                        continue;
                    };
                    let name = target.trim_start_matches("#/components/responses/");
                    let answer = answers.iter().find(|a| a.name == name).unwrap();
                    assert_eq!(
                        answer.status.as_str(),
                        status,
                        "{method} {path}: {status} refers to {name}"
                    );
                    assert!(
                        doc["components"]["responses"][name].is_object(),
                        "{name} is not a component"
                    );
                }
            }
        }
    }

    /// `(path, allowed methods)` of every `resource` call in `source`.
    fn mounted(source: &str) -> Vec<(String, BTreeSet<String>)> {
        let call = concat!("resource", "(\"");
        source
            .match_indices(call)
            .map(|(at, _)| {
                let rest = &source[at + call.len()..];
                let (path, rest) = rest.split_once('"').unwrap();
                let allow = rest.trim_start_matches([',', ' ', '\n']);
                let allow = allow.strip_prefix('"').unwrap();
                let (allow, _) = allow.split_once('"').unwrap();
                let methods = allow.split(',').map(|m| m.trim().to_owned()).collect();
                (path.to_owned(), methods)
            })
            .collect()
    }

    #[test]
    fn every_mounted_route_is_a_path_with_its_methods() {
        let doc = doc();
        let paths = doc["paths"].as_object().unwrap();
        // The `/api/mcp` scope of `routes::configure` (what else the binary serves at the root,
        // `/mcp`, `/metrics`, the dashboard page, is not this API), and the documentation's routes.
        let routes_rs = include_str!("routes.rs");
        let scope = &routes_rs[routes_rs
            .find(concat!("web::scope(", "\"/api/mcp\")"))
            .unwrap()..];
        let scope = &scope[..scope.find("\n    );").unwrap()];
        let mut routes = mounted(scope);
        routes.extend(mounted(include_str!("openapi.rs")));
        assert!(routes.len() >= 10, "{routes:?}");
        for (path, allow) in &routes {
            let full = format!("/api/mcp{path}");
            let item = paths
                .get(&full)
                .unwrap_or_else(|| panic!("{full} is served but not described"));
            let mut described: BTreeSet<String> = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            // `HEAD` goes with `GET` (but on the WebSocket) and is implied, not described.
            if allow.contains("HEAD") {
                assert!(described.contains("GET"), "{full}");
                described.insert("HEAD".into());
            }
            assert_eq!(&described, allow, "{full}");
        }
        assert_eq!(paths.len(), routes.len(), "a described path is not served");
    }

    #[test]
    fn session_ids_have_the_domain_pattern_everywhere() {
        fn walk(v: &Value, found: &mut usize) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(p)) = map.get("pattern")
                        && p.contains("A-Za-z0-9._:-")
                    {
                        assert_eq!(p, tether_domain::openapi::SESSION_ID_PATTERN);
                        assert_eq!(map["maxLength"], 128);
                        *found += 1;
                    }
                    map.values().for_each(|v| walk(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut found = 0;
        walk(&doc(), &mut found);
        assert!(found >= 8, "{found}");
    }

    #[test]
    fn the_page_limit_is_the_domain_s() {
        let doc = doc();
        let params = doc["paths"]["/api/mcp/sessions"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["maximum"], tether_domain::MAX_PAGE);
    }

    #[test]
    fn it_is_openapi_3_1_with_unique_operation_ids() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "{id} twice");
            }
        }
        // OpenAPI requires every path parameter to be `required`.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for op in item.as_object().unwrap().values() {
                for param in op["parameters"].as_array().into_iter().flatten() {
                    if param["in"] == "path" {
                        assert_eq!(param["required"], true, "{path}: {param}");
                    }
                }
            }
        }
        // Every security requirement names a scheme the document defines (the attributes spell
        // the names out; `API_KEY` and `TICKET` define them).
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        assert_eq!(
            schemes.keys().collect::<BTreeSet<_>>(),
            BTreeSet::from([&API_KEY.to_owned(), &TICKET.to_owned()])
        );
        let mut requirements = vec![&doc["security"]];
        for item in doc["paths"].as_object().unwrap().values() {
            requirements.extend(item.as_object().unwrap().values().map(|op| &op["security"]));
        }
        for requirement in requirements
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
        {
            for name in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(name), "{name} is no security scheme");
            }
        }
        // An absent body is allowed where a null one is not.
        let body = &doc["paths"]["/api/mcp/sessions/{id}"]["delete"]["requestBody"];
        assert!(body.get("required").is_none());
        assert_eq!(
            body["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Disconnect"
        );
    }
}
