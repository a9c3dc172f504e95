//! The requested subject name, read strictly.
//!
//! Issued certificates carry the request's whole subject (every attribute, in order), so policy
//! must judge exactly what will be written. The request parser of `kubecert-csr` reports the
//! *first* common name and only the organizations it can decode as strings, while Go (and so
//! the API server that later authenticates the certificate) takes the *last* common name and
//! also decodes BMPString or T61String values. A subject that the two could read differently
//! (two common names, a `system:masters` organization hidden in a BMPString) must never be
//! approved or signed. So this module reads the subject itself, accepts only attribute values
//! that are well-formed UTF8String, PrintableString, IA5String or NumericString, requires that
//! re-encoding what it read gives back the very same bytes, rejects more than one common name,
//! and writes issued subjects from what it read.

use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, X509Name};

/// One attribute of a name: its type and string value, with the original string type kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attribute {
    oid: Vec<u64>,
    tag: u32,
    value: String,
}

/// A subject name whose every attribute is an unambiguous string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubjectName {
    /// Relative distinguished names in order; each holds one or more attributes.
    rdns: Vec<Vec<Attribute>>,
}

const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_ORGANIZATION: &[u64] = &[2, 5, 4, 10];

impl SubjectName {
    /// Reads a DER `Name`. The error text is a complete sentence for a Failed or Denied message.
    pub(crate) fn from_der(der: &[u8]) -> Result<Self, String> {
        let (rest, name) =
            X509Name::from_der(der).map_err(|e| format!("subject name does not parse: {e}"))?;
        if !rest.is_empty() {
            return Err("subject name has trailing bytes".to_owned());
        }
        let mut rdns = Vec::new();
        for rdn in name.iter() {
            let mut attributes = Vec::new();
            for attribute in rdn.iter() {
                let oid: Vec<u64> = attribute
                    .attr_type()
                    .iter()
                    .ok_or_else(|| format!("subject attribute type {} is too large", attribute.attr_type()))?
                    .collect();
                let value = attribute.attr_value();
                let tag = value.tag();
                let text = std::str::from_utf8(value.data)
                    .ok()
                    .filter(|s| string_is_valid_for(tag, s))
                    .ok_or_else(|| {
                        format!(
                            "subject attribute {} must be a UTF8String, PrintableString, IA5String or NumericString with valid contents and no control characters",
                            attribute.attr_type()
                        )
                    })?;
                attributes.push(Attribute { oid, tag: tag.0, value: text.to_owned() });
            }
            rdns.push(attributes);
        }
        let subject = SubjectName { rdns };
        // What was read must be all there is: the parser skips some malformed content.
        if yasna::construct_der(|w| subject.write(w)) != der {
            return Err("subject name is not in canonical DER".to_owned());
        }
        if subject.values(OID_COMMON_NAME).count() > 1 {
            return Err("subject has more than one common name".to_owned());
        }
        Ok(subject)
    }

    fn values<'a>(&'a self, oid: &'a [u64]) -> impl Iterator<Item = &'a str> + 'a {
        self.rdns.iter().flatten().filter(move |a| a.oid == oid).map(|a| a.value.as_str())
    }

    /// The common name, or "" when there is none (as Go reports it).
    pub(crate) fn common_name(&self) -> &str {
        self.values(OID_COMMON_NAME).next().unwrap_or_default()
    }

    /// Every organization, in order.
    pub(crate) fn organizations(&self) -> Vec<&str> {
        self.values(OID_ORGANIZATION).collect()
    }

    /// Whether the name has no attributes at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.rdns.iter().all(Vec::is_empty)
    }

    /// Writes the name as DER, attribute by attribute, each value with its original string type.
    pub(crate) fn write(&self, writer: yasna::DERWriter<'_>) {
        writer.write_sequence(|rdns| {
            for rdn in &self.rdns {
                rdns.next().write_set(|set| {
                    for attribute in rdn {
                        set.next().write_sequence(|pair| {
                            pair.next()
                                .write_oid(&yasna::models::ObjectIdentifier::from_slice(&attribute.oid));
                            pair.next().write_tagged_implicit(universal(u64::from(attribute.tag)), |w| {
                                w.write_bytes(attribute.value.as_bytes())
                            });
                        });
                    }
                });
            }
        });
    }
}

/// The UNIVERSAL tag with this number (a string type).
fn universal(tag_number: u64) -> yasna::Tag {
    yasna::Tag { tag_class: yasna::TagClass::Universal, tag_number }
}

/// Whether `s` is a legal value of the string type `tag` (one of the four this module accepts).
/// Control characters (NUL, newlines, escapes) are refused in every type: they have no place in
/// a user or group name and only serve to confuse whoever reads them.
fn string_is_valid_for(tag: Tag, s: &str) -> bool {
    if s.chars().any(char::is_control) {
        return false;
    }
    match tag {
        Tag::Utf8String => true,
        Tag::Ia5String => s.is_ascii(),
        Tag::NumericString => s.bytes().all(|b| b.is_ascii_digit() || b == b' '),
        Tag::PrintableString => s.bytes().all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of a name made of single-attribute RDNs `(oid, tag, value bytes)`.
    fn name_der(attributes: &[(&[u64], u64, &[u8])]) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence(|rdns| {
                for (oid, tag, value) in attributes {
                    rdns.next().write_set(|set| {
                        set.next().write_sequence(|pair| {
                            pair.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
                            pair.next().write_tagged_implicit(universal(*tag), |w| w.write_bytes(value));
                        })
                    })
                }
            })
        })
    }

    const UTF8: u64 = 12;
    const PRINTABLE: u64 = 19;
    const BMP: u64 = 30;

    #[test]
    fn reads_common_name_and_every_organization_and_round_trips() {
        let der = name_der(&[
            (OID_ORGANIZATION, UTF8, b"system:nodes"),
            (OID_ORGANIZATION, PRINTABLE, b"second"),
            (&[2, 5, 4, 11], UTF8, b"ops"),
            (OID_COMMON_NAME, UTF8, b"system:node:a"),
        ]);
        let name = SubjectName::from_der(&der).unwrap();
        assert_eq!(name.common_name(), "system:node:a");
        assert_eq!(name.organizations(), ["system:nodes", "second"]);
        assert_eq!(yasna::construct_der(|w| name.write(w)), der);
    }

    #[test]
    fn two_common_names_are_refused() {
        let der =
            name_der(&[(OID_COMMON_NAME, UTF8, b"system:node:a"), (OID_COMMON_NAME, UTF8, b"system:node:b")]);
        assert_eq!(SubjectName::from_der(&der).unwrap_err(), "subject has more than one common name");
    }

    #[test]
    fn strings_another_reader_could_decode_differently_are_refused() {
        let bmp: Vec<u8> = "system:masters".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let der = name_der(&[(OID_ORGANIZATION, BMP, &bmp), (OID_COMMON_NAME, UTF8, b"x")]);
        assert!(SubjectName::from_der(&der).unwrap_err().contains("2.5.4.10 must be a UTF8String"));
        let der = name_der(&[(OID_COMMON_NAME, PRINTABLE, b"a*b")]);
        assert!(SubjectName::from_der(&der).is_err());
        let der = name_der(&[(OID_COMMON_NAME, UTF8, &[0xff, 0xfe])]);
        assert!(SubjectName::from_der(&der).is_err());
        let der = name_der(&[(OID_COMMON_NAME, UTF8, b"system:node:a\0b")]);
        assert!(SubjectName::from_der(&der).is_err());
    }

    #[test]
    fn empty_name_has_empty_common_name() {
        let name = SubjectName::from_der(&name_der(&[])).unwrap();
        assert!(name.is_empty());
        assert_eq!(name.common_name(), "");
        assert!(name.organizations().is_empty());
    }

    #[test]
    fn garbage_does_not_panic() {
        for bytes in [&b""[..], b"\x30", b"\x30\x03\x31\x01\x30", b"\x04\x00"] {
            assert!(
                SubjectName::from_der(bytes).is_err(),
                "{bytes:?} parsed as {:?}",
                SubjectName::from_der(bytes)
            );
        }
    }
}
