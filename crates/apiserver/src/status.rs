//! `Status` error bodies with upstream codes, reasons and messages (SPEC W-7…W-10), and
//! field errors for `422 Invalid` (W-8).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

/// Which kind of object an error is about: drives `details` and the message prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// API group ("" for core).
    pub group: String,
    /// Plural resource name, e.g. `certificatesigningrequests`.
    pub resource: String,
    /// Kind, e.g. `CertificateSigningRequest`.
    pub kind: String,
    /// Object name ("" when unknown, e.g. for a list).
    pub name: String,
}

impl Subject {
    /// `certificatesigningrequests.certificates.k8s.io` (or `secrets` for the core group).
    pub fn qualified_resource(&self) -> String {
        qualify(&self.resource, &self.group)
    }

    /// `CertificateSigningRequest.certificates.k8s.io` (or `Secret` for the core group).
    pub fn qualified_kind(&self) -> String {
        qualify(&self.kind, &self.group)
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() { name.to_string() } else { format!("{name}.{group}") }
}

/// A field error (upstream `field.Error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.usages[1]`.
    pub field: String,
    /// The error type and its bad value.
    pub kind: FieldErrorKind,
    /// Extra detail, may be empty.
    pub detail: String,
}

/// The type of a field error. Bad values are pre-rendered the way upstream prints them
/// (strings quoted, numbers plain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `FieldValueRequired`.
    Required,
    /// `FieldValueInvalid` with the rendered bad value.
    Invalid(String),
    /// `FieldValueDuplicate` with the rendered value.
    Duplicate(String),
    /// `FieldValueNotSupported` with the rendered value and the supported values.
    NotSupported(String, Vec<String>),
    /// `FieldValueForbidden`.
    Forbidden,
    /// `FieldValueTooLong` with the maximum length.
    TooLong(usize),
}

impl FieldError {
    /// A `Required value` error.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Required, detail)
    }
    /// An `Invalid value` error; `value` is already rendered (see [`quote`]).
    pub fn invalid(field: impl Into<String>, value: String, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Invalid(value), detail)
    }
    /// A `Duplicate value` error.
    pub fn duplicate(field: impl Into<String>, value: String) -> Self {
        Self::new(field, FieldErrorKind::Duplicate(value), "")
    }
    /// An `Unsupported value` error listing what is supported.
    pub fn not_supported(field: impl Into<String>, value: String, supported: &[&str]) -> Self {
        let supported = supported.iter().map(|s| quote(s)).collect();
        Self::new(field, FieldErrorKind::NotSupported(value, supported), "")
    }
    /// A `Forbidden` error.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Forbidden, detail)
    }
    /// A `Too long` error.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(field, FieldErrorKind::TooLong(max), "")
    }

    fn new(field: impl Into<String>, kind: FieldErrorKind, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind, detail: detail.into() }
    }

    /// The cause reason (`FieldValueInvalid`, …).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong(_) => "FieldValueTooLong",
        }
    }

    /// The message without the field path (upstream `ErrorBody`).
    pub fn body(&self) -> String {
        let head = match &self.kind {
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::TooLong(max) => format!("Too long: may not be more than {max} bytes"),
            FieldErrorKind::Invalid(v) => format!("Invalid value: {v}"),
            FieldErrorKind::Duplicate(v) => format!("Duplicate value: {v}"),
            FieldErrorKind::NotSupported(v, supported) => {
                format!("Unsupported value: {v}: supported values: {}", supported.join(", "))
            }
        };
        if self.detail.is_empty() { head } else { format!("{head}: {}", self.detail) }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Renders a string value the way Go's `%q` does for the common cases.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// `Status.details` naming an object; empty fields are left out, as upstream's `omitempty` does.
pub(crate) fn details(name: &str, group: &str, kind: &str) -> Value {
    let fields = [("name", name), ("group", group), ("kind", kind)];
    Value::Object(
        fields.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| ((*k).into(), json!(v))).collect(),
    )
}

/// An API error that becomes a `Status` response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Status reason (`NotFound`, `Invalid`, …).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `details`, if any.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Self { code, reason, message, details }
    }

    fn resource_details(s: &Subject) -> Value {
        details(&s.name, &s.group, &s.resource)
    }

    /// 404 NotFound for an object.
    pub fn not_found(s: &Subject) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {} not found", s.qualified_resource(), quote(&s.name)),
            Some(Self::resource_details(s)),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(s: &Subject) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {} already exists", s.qualified_resource(), quote(&s.name)),
            Some(Self::resource_details(s)),
        )
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(s: &Subject) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {}: the object has been modified; please apply your changes to the latest version and try again",
                s.qualified_resource(),
                quote(&s.name)
            ),
            Some(Self::resource_details(s)),
        )
    }

    /// 409 Conflict for a delete precondition (`UID` or `ResourceVersion`) the stored object
    /// does not meet.
    pub fn precondition_failed(s: &Subject, field: &str, wanted: &str, stored: &str) -> Self {
        let consequence = if field == "UID" { "deleted and then recreated" } else { "modified" };
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {}: the {field} in the precondition ({wanted}) does not match the {field} in record ({stored}). The object might have been {consequence}",
                s.qualified_kind(),
                quote(&s.name)
            ),
            Some(details(&s.name, &s.group, &s.kind)),
        )
    }

    /// 403 Forbidden for an object (admission or authorization).
    pub fn forbidden(s: &Subject, reason: &str) -> Self {
        let prefix = if s.name.is_empty() {
            s.qualified_resource()
        } else {
            format!("{} {}", s.qualified_resource(), quote(&s.name))
        };
        Self::new(
            403,
            "Forbidden",
            format!("{prefix} is forbidden: {reason}"),
            Some(Self::resource_details(s)),
        )
    }

    /// 403 Forbidden for a non-resource path.
    pub fn forbidden_path(reason: &str) -> Self {
        Self::new(403, "Forbidden", format!("forbidden: {reason}"), Some(json!({})))
    }

    /// 422 Invalid with causes. `errors` must not be empty.
    pub fn invalid(s: &Subject, errors: &[FieldError]) -> Self {
        let joined = match errors {
            [one] => one.to_string(),
            many => format!("[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{} {} is invalid: {joined}", s.qualified_kind(), quote(&s.name)),
            Some({
                let mut details = details(&s.name, &s.group, &s.kind);
                details["causes"] = json!(causes);
                details
            }),
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// 404 NotFound for a path that serves nothing.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".into(), None)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(action: &str, s: &Subject) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{action} is not supported on resources of kind {}", quote(&s.qualified_resource())),
            Some(Self::resource_details(s)),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(accepted: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: {accepted}"),
            None,
        )
    }

    /// 410 Expired (a resourceVersion or continue token older than what is kept).
    pub fn expired(message: String) -> Self {
        Self::new(410, "Expired", message, None)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"), None)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            Some(json!({"kind": content_type})),
        )
    }

    /// 415 for a PATCH whose Content-Type is no patch type (upstream's router answers it
    /// with a bare sentence).
    pub fn unsupported_patch_type() -> Self {
        Self::new(415, "UnsupportedMediaType", "415: Unsupported Media Type".into(), Some(json!({})))
    }

    /// 500 InternalError; the detail is logged by the caller, the client sees a summary.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
            Some(json!({"causes": [{"message": message}]})),
        )
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::handlers::json_response(code, &self.to_status())
    }
}

/// Result alias for request handling.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(name: &str) -> Subject {
        Subject {
            group: "certificates.k8s.io".into(),
            resource: "certificatesigningrequests".into(),
            kind: "CertificateSigningRequest".into(),
            name: name.into(),
        }
    }

    #[test]
    fn messages_match_upstream_shapes() {
        assert_eq!(
            ApiError::not_found(&csr("a")).message,
            "certificatesigningrequests.certificates.k8s.io \"a\" not found"
        );
        assert_eq!(
            ApiError::already_exists(&csr("a")).message,
            "certificatesigningrequests.certificates.k8s.io \"a\" already exists"
        );
        assert!(ApiError::conflict(&csr("a")).message.starts_with(
            "Operation cannot be fulfilled on certificatesigningrequests.certificates.k8s.io \"a\": the object has been modified"
        ));
        assert_eq!(
            ApiError::forbidden(&csr(""), "nope").message,
            "certificatesigningrequests.certificates.k8s.io is forbidden: nope"
        );
    }

    #[test]
    fn invalid_joins_one_or_many() {
        let one = [FieldError::required("spec.usages", "")];
        let e = ApiError::invalid(&csr("a"), &one);
        assert_eq!(
            e.message,
            "CertificateSigningRequest.certificates.k8s.io \"a\" is invalid: spec.usages: Required value"
        );
        let two = [
            FieldError::required("spec.usages", ""),
            FieldError::duplicate("spec.usages[1]", quote("client auth")),
        ];
        let e = ApiError::invalid(&csr("a"), &two);
        assert!(
            e.message
                .ends_with("[spec.usages: Required value, spec.usages[1]: Duplicate value: \"client auth\"]")
        );
        let s = e.to_status();
        assert_eq!(s["details"]["causes"][1]["reason"], "FieldValueDuplicate");
        assert_eq!(s["details"]["kind"], "CertificateSigningRequest");
        assert_eq!(s["code"], 422);
    }

    #[test]
    fn not_supported_lists_values() {
        let e = FieldError::not_supported("x", quote("b"), &["a", "c"]);
        assert_eq!(e.body(), "Unsupported value: \"b\": supported values: \"a\", \"c\"");
    }
}
