//! Reading the XML answers of the lean request path: `ListObjectsV2` pages
//! (`<ListBucketResult>`) and `CopyObject` results (`<CopyObjectResult>`, or an `<Error>` that
//! S3 may send with status 200 when a copy fails after it started).
//!
//! Only what rossfs needs is kept: of a listing page each object's key, size, ETag and
//! Last-Modified, the common prefixes, whether the listing is truncated, the continuation token
//! and the encoding type; of a copy its new ETag or its error code and message. Unknown
//! elements are skipped; text is unescaped (`&amp;`, `&#38;` ...).

use std::time::SystemTime;

use xmlparser::{ElementEnd, Token, Tokenizer};

use super::ObjectInfo;

/// One page as the server wrote it (keys still URL-encoded if `url_encoded`).
#[derive(Debug, Default)]
pub(super) struct RawListPage {
    pub objects: Vec<ObjectInfo>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    pub next_token: Option<String>,
    pub url_encoded: bool,
}

/// Parses a `<ListBucketResult>` document; an error names what is wrong with it.
pub(super) fn parse_list_v2(body: &[u8]) -> Result<RawListPage, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the listing is not UTF-8: {e}"))?;
    let mut page = RawListPage::default();
    // Names of the open elements, outermost first.
    let mut open: Vec<&str> = Vec::new();
    let mut value = String::new();
    let mut object = ObjectInfo::default();
    let mut has_key = false;
    let mut root_seen = false;
    for token in Tokenizer::from(text) {
        let token = token.map_err(|e| format!("malformed listing XML: {e}"))?;
        match token {
            Token::ElementStart { local, .. } => {
                if open.is_empty() {
                    if local.as_str() != "ListBucketResult" {
                        return Err(format!("expected <ListBucketResult>, found <{}>", local.as_str()));
                    }
                    root_seen = true;
                }
                open.push(local.as_str());
                value.clear();
                if open.len() == 2 && local.as_str() == "Contents" {
                    object = ObjectInfo::default();
                    has_key = false;
                }
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty | ElementEnd::Close(..) => {
                    let path = open.as_slice();
                    match path {
                        [_, "Contents", field] => match *field {
                            "Key" => {
                                object.key = unescape(&value)?;
                                has_key = true;
                            }
                            "Size" => {
                                object.size = value
                                    .trim()
                                    .parse()
                                    .map_err(|_| format!("bad object <Size> {value:?}"))?
                            }
                            "ETag" => object.etag = Some(unescape(&value)?),
                            "LastModified" => object.last_modified = parse_time(&value),
                            _ => {}
                        },
                        [_, "Contents"] if has_key => page.objects.push(std::mem::take(&mut object)),
                        [_, "CommonPrefixes", "Prefix"] => page.prefixes.push(unescape(&value)?),
                        [_, "IsTruncated"] => page.truncated = value.trim() == "true",
                        [_, "NextContinuationToken"] => page.next_token = Some(unescape(&value)?),
                        [_, "EncodingType"] => page.url_encoded = value.trim().eq_ignore_ascii_case("url"),
                        _ => {}
                    }
                    open.pop();
                    value.clear();
                }
            },
            Token::Text { text } => value.push_str(text.as_str()),
            Token::Cdata { text, .. } => {
                // Kept escaped-looking text out of unescape: CDATA is literal.
                value.push_str(&text.as_str().replace('&', "&amp;"));
            }
            _ => {}
        }
    }
    if !root_seen || !open.is_empty() {
        return Err("the listing XML ends before </ListBucketResult>".into());
    }
    Ok(page)
}

/// What a `CopyObject` answer with status 200 says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CopyAnswer {
    /// The copy exists; its ETag, if the answer gave one.
    Done { etag: Option<String> },
    /// The copy failed after the server accepted it.
    Failed { code: String, message: String },
}

/// Parses the body of a `CopyObject` (or `UploadPartCopy`) answer; an error names what is
/// wrong with it.
pub(super) fn parse_copy_result(body: &[u8]) -> Result<CopyAnswer, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the copy result is not UTF-8: {e}"))?;
    let mut open: Vec<&str> = Vec::new();
    let mut value = String::new();
    let mut root: Option<&str> = None;
    let (mut etag, mut code, mut message) = (None, String::new(), String::new());
    for token in Tokenizer::from(text) {
        let token = token.map_err(|e| format!("malformed copy result XML: {e}"))?;
        match token {
            Token::ElementStart { local, .. } => {
                if open.is_empty() {
                    match local.as_str() {
                        r @ ("CopyObjectResult" | "CopyPartResult" | "Error") => root = Some(r),
                        other => return Err(format!("expected <CopyObjectResult>, found <{other}>")),
                    }
                }
                open.push(local.as_str());
                value.clear();
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty | ElementEnd::Close(..) => {
                    if let ElementEnd::Close(_, name) = end {
                        if open.last() != Some(&name.as_str()) {
                            return Err(format!(
                                "malformed copy result XML: </{}> closes <{}>",
                                name.as_str(),
                                open.last().unwrap_or(&"")
                            ));
                        }
                    }
                    match open.as_slice() {
                        ["CopyObjectResult" | "CopyPartResult", "ETag"] => etag = Some(unescape(&value)?),
                        ["Error", "Code"] => code = unescape(&value)?,
                        ["Error", "Message"] => message = unescape(&value)?,
                        _ => {}
                    }
                    open.pop();
                }
            },
            Token::Text { text } if !open.is_empty() => value.push_str(text.as_str()),
            // CDATA is literal: escaped here so that unescape gives it back unchanged.
            Token::Cdata { text, .. } if !open.is_empty() => {
                value.push_str(&text.as_str().replace('&', "&amp;"))
            }
            _ => {}
        }
    }
    if !open.is_empty() {
        return Err(format!("the copy result ends inside <{}>", open.join("><")));
    }
    match root {
        Some("Error") => Ok(CopyAnswer::Failed { code, message }),
        Some(_) => Ok(CopyAnswer::Done { etag }),
        None => Err("the copy result is empty".into()),
    }
}

/// An ISO 8601 time as S3 writes it (`2026-11-24T04:05:55.123Z`).
fn parse_time(s: &str) -> Option<SystemTime> {
    aws_smithy_types::DateTime::from_str(s.trim(), aws_smithy_types::date_time::Format::DateTime)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
}

/// Replaces XML character and entity references.
fn unescape(s: &str) -> Result<String, String> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .ok_or_else(|| format!("unterminated XML reference in {s:?}"))?;
        let name = &after[..end];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown XML reference &{name}; in {s:?}"))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>d%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
  <Delimiter>%2F</Delimiter><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <NextContinuationToken>tok&amp;en=</NextContinuationToken>
  <Contents><Key>d%2Fa%20b</Key><LastModified>2026-11-24T04:05:55.123Z</LastModified>
    <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag><Size>4096</Size>
    <StorageClass>STANDARD</StorageClass><Owner><ID>x</ID></Owner></Contents>
  <Contents><Key>d%2Fempty</Key><Size>0</Size><ETag>"e"</ETag></Contents>
  <CommonPrefixes><Prefix>d%2Fsub%2F</Prefix></CommonPrefixes>
  <CommonPrefixes><Prefix>d%2Fx&#38;y%2F</Prefix></CommonPrefixes>
</ListBucketResult>"#;

    #[test]
    fn a_page_with_objects_prefixes_and_a_token() {
        let p = parse_list_v2(PAGE.as_bytes()).unwrap();
        assert!(p.truncated && p.url_encoded);
        assert_eq!(p.next_token.as_deref(), Some("tok&en="));
        assert_eq!(p.objects.len(), 2);
        let a = &p.objects[0];
        assert_eq!(a.key, "d%2Fa%20b");
        assert_eq!(a.size, 4096);
        assert_eq!(a.etag.as_deref(), Some("\"9b2cf535f27731c974343645a3985328\""));
        let t = a
            .last_modified
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!((t.as_secs(), t.subsec_millis()), (1_795_493_155, 123));
        assert_eq!(p.objects[1].key, "d%2Fempty");
        assert_eq!(p.objects[1].size, 0);
        assert_eq!(p.prefixes, ["d%2Fsub%2F", "d%2Fx&y%2F"]);
    }

    #[test]
    fn last_page_and_empty_listing() {
        let p = parse_list_v2(
            b"<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>",
        )
        .unwrap();
        assert!(!p.truncated && p.next_token.is_none() && p.objects.is_empty());
        let p = parse_list_v2(b"<ListBucketResult/>").unwrap();
        assert!(p.objects.is_empty() && !p.truncated);
    }

    #[test]
    fn broken_documents_are_errors() {
        assert!(parse_list_v2(b"<Error><Code>AccessDenied</Code></Error>").is_err());
        assert!(parse_list_v2(b"<ListBucketResult><Contents><Key>a</Key>").is_err());
        assert!(parse_list_v2(b"").is_err());
        assert!(
            parse_list_v2(b"<ListBucketResult><Contents><Size>x</Size></Contents></ListBucketResult>")
                .is_err()
        );
        assert!(unescape("a &bogus; b").is_err());
        assert_eq!(unescape("&lt;&#x41;&#66;&gt;").unwrap(), "<AB>");
    }

    #[test]
    fn copy_results_give_the_etag_or_the_error() {
        let done = br#"<?xml version="1.0" encoding="UTF-8"?>
<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LastModified>2026-11-30T10:00:00.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>"#;
        assert_eq!(
            parse_copy_result(done),
            Ok(CopyAnswer::Done {
                etag: Some("\"9b2cf535f27731c974343645a3985328\"".into())
            })
        );
        let failed =
            b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>";
        assert_eq!(
            parse_copy_result(failed),
            Ok(CopyAnswer::Failed {
                code: "InternalError".into(),
                message: "We encountered an internal error.".into()
            })
        );
        assert_eq!(
            parse_copy_result(b"<CopyPartResult><ETag>\"p1\"</ETag></CopyPartResult>"),
            Ok(CopyAnswer::Done {
                etag: Some("\"p1\"".into())
            })
        );
        assert_eq!(
            parse_copy_result(b"<CopyObjectResult/>"),
            Ok(CopyAnswer::Done { etag: None })
        );
        assert_eq!(
            parse_copy_result(b"<CopyObjectResult><ETag><![CDATA[\"a&amp;b\"]]></ETag></CopyObjectResult>"),
            Ok(CopyAnswer::Done {
                etag: Some("\"a&amp;b\"".into())
            }),
            "CDATA is literal"
        );
        assert!(parse_copy_result(b"").is_err());
        assert!(parse_copy_result(b"<ListBucketResult/>").is_err());
        assert!(parse_copy_result(b"<CopyObjectResult><ETag>x</CopyObjectResult>").is_err());
    }
}
