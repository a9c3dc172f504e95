//! What a request addresses (upstream's RequestInfo): resource or non-resource path, verb,
//! namespace, name, subresource; plus query decoding.

use std::collections::HashMap;

use http::Method;

use crate::authz::{Attributes, ResourceAttributes};
use crate::resources::ResourceType;

/// A request for a served resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourceRequest {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: &'static str,
}

/// The parsed target of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A served resource.
    Resource(ResourceRequest),
    /// Anything else under `/api` or `/apis` that names a resource we do not serve.
    UnknownResource,
    /// A non-resource path (discovery, health, OpenAPI).
    NonResource,
}

/// Decodes `a=b&c=d` with percent- and plus-decoding.
pub(crate) fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_true(query: &HashMap<String, String>, key: &str) -> bool {
    matches!(query.get(key).map(String::as_str), Some("true" | "1"))
}

/// Parses the path of a request.
pub(crate) fn parse(method: &Method, path: &str, query: &HashMap<String, String>) -> Target {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Target::NonResource,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some((*n).to_string()), None),
        [r, n, s] => (*r, Some((*n).to_string()), Some((*s).to_string())),
        _ => return Target::UnknownResource,
    };
    let Some(rt) = ResourceType::find(group, version, resource) else {
        return Target::UnknownResource;
    };
    if namespace.is_some() && !rt.namespaced {
        return Target::UnknownResource;
    }
    if let Some(s) = &subresource
        && !rt.subresources.iter().any(|(name, _)| name == s)
    {
        return Target::UnknownResource;
    }
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", _) if is_true(query, "watch") => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unsupported",
    };
    Target::Resource(ResourceRequest { rt, namespace, name, subresource, verb })
}

impl ResourceRequest {
    /// Authorization attributes of this request.
    pub fn attributes(&self) -> Attributes {
        Attributes {
            verb: self.verb.to_string(),
            resource: Some(ResourceAttributes {
                group: self.rt.group.to_string(),
                resource: self.rt.resource.to_string(),
                subresource: self.subresource.clone().unwrap_or_default(),
                namespace: self.namespace.clone().unwrap_or_default(),
                name: self.name.clone().unwrap_or_default(),
            }),
            path: String::new(),
        }
    }
}

/// The verb of a non-resource request.
pub(crate) fn non_resource_verb(method: &Method) -> String {
    match *method {
        Method::HEAD => "get".into(),
        ref m => m.as_str().to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, path: &str) -> Target {
        parse(&method, path, &parse_query(None))
    }

    #[test]
    fn parses_resource_paths() {
        let Target::Resource(r) =
            target(Method::PUT, "/apis/certificates.k8s.io/v1/certificatesigningrequests/a/approval")
        else {
            panic!("not a resource");
        };
        assert_eq!(
            (r.verb, r.name.as_deref(), r.subresource.as_deref()),
            ("update", Some("a"), Some("approval"))
        );
        let Target::Resource(r) = target(Method::GET, "/api/v1/namespaces/kube-system/secrets") else {
            panic!("not a resource");
        };
        assert_eq!((r.verb, r.namespace.as_deref()), ("list", Some("kube-system")));
        assert_eq!(
            target(Method::GET, "/apis/certificates.k8s.io/v1beta1/certificatesigningrequests"),
            Target::UnknownResource
        );
        assert_eq!(target(Method::GET, "/api/v1/pods"), Target::UnknownResource);
        assert_eq!(
            target(Method::GET, "/apis/certificates.k8s.io/v1/certificatesigningrequests/a/nope"),
            Target::UnknownResource
        );
        assert_eq!(target(Method::GET, "/apis/certificates.k8s.io/v1"), Target::NonResource);
        assert_eq!(target(Method::GET, "/api/v1"), Target::NonResource);
    }

    #[test]
    fn decodes_queries() {
        let q = parse_query(Some("fieldSelector=metadata.name%3Dx&watch=1&labelSelector=a+in+(b)"));
        assert_eq!(q["fieldSelector"], "metadata.name=x");
        assert_eq!(q["labelSelector"], "a in (b)");
        assert!(is_true(&q, "watch"));
        assert_eq!(parse_query(Some("a=%zz%"))["a"], "%zz%");
    }
}
