//! The OpenAPI v2 document in the protobuf form kubectl before 1.29 asks for: gnostic's
//! `openapi.v2.Document` (github.com/google/gnostic-models, `openapiv2/OpenAPIv2.proto`), which
//! kube-apiserver makes from its JSON document with `openapi_v2.ParseDocument` and
//! `proto.Marshal`.
//!
//! The JSON document is walked with message tables taken from that file. Like gnostic's parser,
//! the walk refuses members the message has no field for, so the two forms served always carry
//! the same document. Values of type `Any` (defaults, enums, examples, `x-` extensions) are
//! YAML text in gnostic; JSON text is YAML, and kubectl reads it as such.

use serde_json::Value;

use crate::protobuf::{FIXED64, VARINT, put_len, put_tag, put_varint};

/// How a JSON value is written as one protobuf field.
enum Kind {
    Str,
    Bool,
    /// `int64`.
    Int,
    /// `double`.
    Double,
    /// `Any{string yaml = 2}`.
    Any,
    Msg(&'static Message),
    /// A JSON array as a repeated field.
    Repeated(&'static Kind),
    /// One value or an array of them, as a message that repeats them in field 1 (`TypeItem`,
    /// `ItemsItem`).
    OneOrMany(&'static Kind),
    /// `AdditionalPropertiesItem`: a schema (field 1) or a boolean (field 2).
    SchemaOrBool,
    /// `{"$ref": …}` as a `JsonReference` in field 2, anything else as the kind in field 1
    /// (`ParametersItem`, `ResponseValue`).
    RefOr(&'static Kind),
    /// `Parameter`, by the parameter's `in`.
    Parameter,
    /// The value as the kind in field `n` of a message of its own (a `oneof` wrapper).
    Wrapped(u64, &'static Kind),
}

/// A message written from a JSON object.
struct Message {
    name: &'static str,
    /// Members by JSON name, with field number and kind.
    fields: &'static [(&'static str, u64, Kind)],
    /// The field of the `x-` members (`repeated NamedAny vendor_extension`), if the message has one.
    extensions: Option<u64>,
    /// The field that takes every other member as a `Named…` pair {name = 1, value = 2}: the
    /// map-like messages (`Paths`, `Responses`, `Definitions`, `Properties`).
    entries: Option<(u64, Kind)>,
}

const fn message(
    name: &'static str,
    fields: &'static [(&'static str, u64, Kind)],
    extensions: Option<u64>,
) -> Message {
    Message { name, fields, extensions, entries: None }
}

static DOCUMENT: Message = message(
    "Document",
    &[
        ("swagger", 1, Kind::Str),
        ("info", 2, Kind::Msg(&INFO)),
        ("host", 3, Kind::Str),
        ("basePath", 4, Kind::Str),
        ("schemes", 5, Kind::Repeated(&Kind::Str)),
        ("consumes", 6, Kind::Repeated(&Kind::Str)),
        ("produces", 7, Kind::Repeated(&Kind::Str)),
        ("paths", 8, Kind::Msg(&PATHS)),
        ("definitions", 9, Kind::Msg(&DEFINITIONS)),
    ],
    Some(16),
);

static INFO: Message = message(
    "Info",
    &[("title", 1, Kind::Str), ("version", 2, Kind::Str), ("description", 3, Kind::Str)],
    Some(7),
);

static PATHS: Message =
    Message { name: "Paths", fields: &[], extensions: Some(1), entries: Some((2, Kind::Msg(&PATH_ITEM))) };

static PATH_ITEM: Message = message(
    "PathItem",
    &[
        ("$ref", 1, Kind::Str),
        ("get", 2, Kind::Msg(&OPERATION)),
        ("put", 3, Kind::Msg(&OPERATION)),
        ("post", 4, Kind::Msg(&OPERATION)),
        ("delete", 5, Kind::Msg(&OPERATION)),
        ("options", 6, Kind::Msg(&OPERATION)),
        ("head", 7, Kind::Msg(&OPERATION)),
        ("patch", 8, Kind::Msg(&OPERATION)),
        ("parameters", 9, Kind::Repeated(&Kind::RefOr(&Kind::Parameter))),
    ],
    Some(10),
);

static OPERATION: Message = message(
    "Operation",
    &[
        ("tags", 1, Kind::Repeated(&Kind::Str)),
        ("summary", 2, Kind::Str),
        ("description", 3, Kind::Str),
        ("operationId", 5, Kind::Str),
        ("produces", 6, Kind::Repeated(&Kind::Str)),
        ("consumes", 7, Kind::Repeated(&Kind::Str)),
        ("parameters", 8, Kind::Repeated(&Kind::RefOr(&Kind::Parameter))),
        ("responses", 9, Kind::Msg(&RESPONSES)),
        ("schemes", 10, Kind::Repeated(&Kind::Str)),
        ("deprecated", 11, Kind::Bool),
    ],
    Some(13),
);

static QUERY_PARAMETER: Message = message(
    "QueryParameterSubSchema",
    &[
        ("required", 1, Kind::Bool),
        ("in", 2, Kind::Str),
        ("description", 3, Kind::Str),
        ("name", 4, Kind::Str),
        ("allowEmptyValue", 5, Kind::Bool),
        ("type", 6, Kind::Str),
        ("format", 7, Kind::Str),
        ("default", 10, Kind::Any),
        ("uniqueItems", 20, Kind::Bool),
        ("enum", 21, Kind::Repeated(&Kind::Any)),
    ],
    Some(23),
);

static RESPONSES: Message = Message {
    name: "Responses",
    fields: &[],
    extensions: Some(2),
    entries: Some((1, Kind::RefOr(&Kind::Msg(&RESPONSE)))),
};

static RESPONSE: Message = message(
    "Response",
    &[("description", 1, Kind::Str), ("schema", 2, Kind::Wrapped(1, &Kind::Msg(&SCHEMA)))],
    Some(5),
);

static JSON_REFERENCE: Message =
    message("JsonReference", &[("$ref", 1, Kind::Str), ("description", 2, Kind::Str)], None);

static DEFINITIONS: Message =
    Message { name: "Definitions", fields: &[], extensions: None, entries: Some((1, Kind::Msg(&SCHEMA))) };

static PROPERTIES: Message =
    Message { name: "Properties", fields: &[], extensions: None, entries: Some((1, Kind::Msg(&SCHEMA))) };

static SCHEMA: Message = message(
    "Schema",
    &[
        ("$ref", 1, Kind::Str),
        ("format", 2, Kind::Str),
        ("title", 3, Kind::Str),
        ("description", 4, Kind::Str),
        ("default", 5, Kind::Any),
        ("multipleOf", 6, Kind::Double),
        ("maximum", 7, Kind::Double),
        ("exclusiveMaximum", 8, Kind::Bool),
        ("minimum", 9, Kind::Double),
        ("exclusiveMinimum", 10, Kind::Bool),
        ("maxLength", 11, Kind::Int),
        ("minLength", 12, Kind::Int),
        ("pattern", 13, Kind::Str),
        ("maxItems", 14, Kind::Int),
        ("minItems", 15, Kind::Int),
        ("uniqueItems", 16, Kind::Bool),
        ("maxProperties", 17, Kind::Int),
        ("minProperties", 18, Kind::Int),
        ("required", 19, Kind::Repeated(&Kind::Str)),
        ("enum", 20, Kind::Repeated(&Kind::Any)),
        ("additionalProperties", 21, Kind::SchemaOrBool),
        ("type", 22, Kind::OneOrMany(&Kind::Str)),
        ("items", 23, Kind::OneOrMany(&Kind::Msg(&SCHEMA))),
        ("allOf", 24, Kind::Repeated(&Kind::Msg(&SCHEMA))),
        ("properties", 25, Kind::Msg(&PROPERTIES)),
        ("discriminator", 26, Kind::Str),
        ("readOnly", 27, Kind::Bool),
        ("example", 30, Kind::Any),
    ],
    Some(31),
);

// The messages inside the `oneof` wrappers, where `write` picks the case.
static SCHEMA_KIND: Kind = Kind::Msg(&SCHEMA);
static JSON_REFERENCE_KIND: Kind = Kind::Msg(&JSON_REFERENCE);
static QUERY_PARAMETER_KIND: Kind = Kind::Wrapped(3, &Kind::Msg(&QUERY_PARAMETER));

/// Encodes an OpenAPI v2 (Swagger 2.0) JSON document as `openapi.v2.Document`; the error names
/// the first member that has no place in it.
pub(crate) fn encode(document: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_message(&mut out, &DOCUMENT, document, "")?;
    Ok(out)
}

fn write_message(out: &mut Vec<u8>, m: &Message, value: &Value, at: &str) -> Result<(), String> {
    let object = value.as_object().ok_or_else(|| format!("{at}: a {} must be an object", m.name))?;
    for (key, member) in object {
        let here = format!("{at}/{key}");
        if let Some((_, n, kind)) = m.fields.iter().find(|(name, _, _)| name == key) {
            write(out, *n, kind, member, &here)?;
        } else if let Some(n) = m.extensions.filter(|_| key.starts_with("x-")) {
            write_entry(out, n, key, &Kind::Any, member, &here)?;
        } else if let Some((n, kind)) = &m.entries {
            write_entry(out, *n, key, kind, member, &here)?;
        } else {
            return Err(format!("{here}: a {} has no member {key:?}", m.name));
        }
    }
    Ok(())
}

/// A `Named…` pair: the name in field 1, the value in field 2.
fn write_entry(
    out: &mut Vec<u8>,
    n: u64,
    name: &str,
    kind: &Kind,
    value: &Value,
    at: &str,
) -> Result<(), String> {
    let mut pair = Vec::new();
    put_len(&mut pair, 1, name.as_bytes());
    write(&mut pair, 2, kind, value, at)?;
    put_len(out, n, &pair);
    Ok(())
}

fn write(out: &mut Vec<u8>, n: u64, kind: &Kind, value: &Value, at: &str) -> Result<(), String> {
    let expected = |what: &str| format!("{at}: expected {what}, found {value}");
    match kind {
        Kind::Str => put_len(out, n, value.as_str().ok_or_else(|| expected("a string"))?.as_bytes()),
        Kind::Bool => {
            put_tag(out, n, VARINT);
            put_varint(out, u64::from(value.as_bool().ok_or_else(|| expected("a boolean"))?));
        }
        Kind::Int => {
            put_tag(out, n, VARINT);
            // int64 is written as its two's complement.
            put_varint(out, value.as_i64().ok_or_else(|| expected("an integer"))? as u64);
        }
        Kind::Double => {
            put_tag(out, n, FIXED64);
            out.extend_from_slice(&value.as_f64().ok_or_else(|| expected("a number"))?.to_le_bytes());
        }
        Kind::Any => {
            let mut any = Vec::new();
            put_len(&mut any, 2, value.to_string().as_bytes());
            put_len(out, n, &any);
        }
        Kind::Msg(m) => {
            let mut body = Vec::new();
            write_message(&mut body, m, value, at)?;
            put_len(out, n, &body);
        }
        Kind::Repeated(item) => {
            for (i, v) in value.as_array().ok_or_else(|| expected("an array"))?.iter().enumerate() {
                write(out, n, item, v, &format!("{at}/{i}"))?;
            }
        }
        Kind::OneOrMany(item) => {
            let mut body = Vec::new();
            match value {
                Value::Array(_) => write(&mut body, 1, &Kind::Repeated(item), value, at)?,
                one => write(&mut body, 1, item, one, at)?,
            }
            put_len(out, n, &body);
        }
        Kind::SchemaOrBool => match value {
            Value::Bool(_) => write(out, n, &Kind::Wrapped(2, &Kind::Bool), value, at)?,
            _ => write(out, n, &Kind::Wrapped(1, &SCHEMA_KIND), value, at)?,
        },
        Kind::RefOr(other) => match value.get("$ref") {
            Some(_) => write(out, n, &Kind::Wrapped(2, &JSON_REFERENCE_KIND), value, at)?,
            None => write(out, n, &Kind::Wrapped(1, other), value, at)?,
        },
        Kind::Parameter => match value.get("in").and_then(Value::as_str) {
            // `Parameter.non_body_parameter` → `NonBodyParameter.query_parameter_sub_schema`.
            Some("query") => write(out, n, &Kind::Wrapped(2, &QUERY_PARAMETER_KIND), value, at)?,
            _ => return Err(expected("a query parameter")),
        },
        Kind::Wrapped(inner, kind) => {
            let mut body = Vec::new();
            write(&mut body, *inner, kind, value, at)?;
            put_len(out, n, &body);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn writes_the_field_numbers_of_openapiv2_proto() {
        let doc = json!({
            "swagger": "2.0",
            "definitions": {"T": {
                "type": "object",
                "properties": {"n": {"type": "integer", "maxLength": 3}},
                "x-k": [{"kind": "K"}],
            }},
        });
        // Document{swagger = 1, definitions = 9: Definitions{additional_properties = 1:
        // NamedSchema{name = 1, value = 2: Schema{type = 22: TypeItem{value = 1},
        // properties = 25, vendor_extension = 31: NamedAny{name, value: Any{yaml = 2}}}}}},
        // members in the JSON's (sorted) order.
        let mut n_schema = Vec::new();
        put_tag(&mut n_schema, 11, VARINT);
        put_varint(&mut n_schema, 3);
        put_len(&mut n_schema, 22, b"\x0a\x07integer");
        let mut n = Vec::new();
        put_len(&mut n, 1, b"n");
        put_len(&mut n, 2, &n_schema);
        let mut properties = Vec::new();
        put_len(&mut properties, 1, &n);
        let mut any = Vec::new();
        put_len(&mut any, 2, br#"[{"kind":"K"}]"#);
        let mut extension = Vec::new();
        put_len(&mut extension, 1, b"x-k");
        put_len(&mut extension, 2, &any);
        let mut t_schema = Vec::new();
        put_len(&mut t_schema, 25, &properties);
        put_len(&mut t_schema, 22, b"\x0a\x06object");
        put_len(&mut t_schema, 31, &extension);
        let mut t = Vec::new();
        put_len(&mut t, 1, b"T");
        put_len(&mut t, 2, &t_schema);
        let mut definitions = Vec::new();
        put_len(&mut definitions, 1, &t);
        let mut expected = Vec::new();
        put_len(&mut expected, 9, &definitions);
        put_len(&mut expected, 1, b"2.0");
        assert_eq!(encode(&doc).unwrap(), expected);
    }

    #[test]
    fn refuses_what_swagger_has_no_place_for() {
        let err = encode(&json!({"definitions": {"T": {"nullable": true}}})).unwrap_err();
        assert_eq!(err, r#"/definitions/T/nullable: a Schema has no member "nullable""#);
        let err = encode(&json!({"definitions": {"T": {"type": ["string", 1]}}})).unwrap_err();
        assert_eq!(err, "/definitions/T/type/1: expected a string, found 1");
        assert!(encode(&json!([])).is_err());
    }
}
