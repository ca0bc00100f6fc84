//! Extended attributes in the s3fs dialect: one `xattr` user-metadata entry holding the
//! URL-encoded JSON object `{"name":"<base64 value>",...}`.
//!
//! Only the `user.` namespace is stored; S3 caps all user metadata of an object at 2 KiB, so a
//! change that would exceed it is refused (E2BIG) instead of being silently dropped.

use std::collections::BTreeMap;

use base64::Engine;

/// Name of the user-metadata entry that holds the attributes.
pub const XATTR_KEY: &str = "xattr";

/// S3's limit on the user metadata of one object (keys and values, in bytes).
pub const USER_METADATA_LIMIT: usize = 2048;

/// Room an xattr change leaves under [`USER_METADATA_LIMIT`] for what later changes of the
/// file add to its metadata (an `atime` entry once atime and mtime differ, longer uid or gid
/// values), so a later write, touch or chown is not refused for the attributes' sake.
pub const LATER_METADATA_ROOM: usize = 64;

const URL_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Decodes the `xattr` metadata value; an unreadable value yields no attributes (with a
/// warning), never an error for the whole file.
pub fn decode(value: &str) -> BTreeMap<String, Vec<u8>> {
    let text = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
    match parse_flat_object(&text) {
        Some(pairs) => pairs
            .into_iter()
            .filter_map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .ok()?;
                Some((k, bytes))
            })
            .collect(),
        None => {
            tracing::warn!("ignoring unreadable xattr metadata");
            BTreeMap::new()
        }
    }
}

/// Encodes attributes as the `xattr` metadata value.
pub fn encode(attrs: &BTreeMap<String, Vec<u8>>) -> String {
    let mut json = String::from("{");
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_json_string(&mut json, k);
        json.push(':');
        push_json_string(&mut json, &base64::engine::general_purpose::STANDARD.encode(v));
    }
    json.push('}');
    percent_encoding::utf8_percent_encode(&json, URL_SET).to_string()
}

/// Bytes of user metadata as S3 counts them (keys plus values).
pub fn metadata_size<'a>(meta: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    meta.into_iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses `{"k":"v",...}` (string values only).
fn parse_flat_object(text: &str) -> Option<Vec<(String, String)>> {
    let mut chars = text.trim().chars().peekable();
    let mut out = Vec::new();
    if chars.next()? != '{' {
        return None;
    }
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
    };
    skip_ws(&mut chars);
    if chars.peek() == Some(&'}') {
        return Some(out);
    }
    loop {
        skip_ws(&mut chars);
        let k = parse_string(&mut chars)?;
        skip_ws(&mut chars);
        if chars.next()? != ':' {
            return None;
        }
        skip_ws(&mut chars);
        let v = parse_string(&mut chars)?;
        out.push((k, v));
        skip_ws(&mut chars);
        match chars.next()? {
            ',' => continue,
            '}' => return Some(out),
            _ => return None,
        }
    }
}

fn parse_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    if chars.next()? != '"' {
        return None;
    }
    let mut s = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(s),
            '\\' => match chars.next()? {
                '"' => s.push('"'),
                '\\' => s.push('\\'),
                '/' => s.push('/'),
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                'b' => s.push('\u{8}'),
                'f' => s.push('\u{c}'),
                'u' => {
                    let hex: String = (0..4).map(|_| chars.next()).collect::<Option<String>>()?;
                    s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            },
            c => s.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_s3fs_format() {
        let mut a = BTreeMap::new();
        a.insert("user.note".to_string(), b"hello".to_vec());
        a.insert("user.q\"uote".to_string(), vec![0, 255, 1]);
        let enc = encode(&a);
        assert!(!enc.contains('{') && !enc.contains('"'), "url-encoded: {enc}");
        assert_eq!(decode(&enc), a);
        // What s3fs writes for user.foo=bar.
        let s3fs = "%7B%22user.foo%22%3A%22YmFy%22%7D";
        assert_eq!(decode(s3fs).get("user.foo").map(Vec::as_slice), Some(&b"bar"[..]));
        assert!(decode("garbage").is_empty());
        assert!(decode(&encode(&BTreeMap::new())).is_empty());
    }
}
