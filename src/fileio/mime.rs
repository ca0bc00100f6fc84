//! Content types of uploaded files, by extension, from a `mime.types` file.
//!
//! The file has lines `type/subtype ext1 ext2 ...` (`#` comments). The default is
//! `/etc/mime.types` (Debian's `media-types` package); a missing default file just means every
//! upload is `application/octet-stream`, while a file named with `-o mime=` must be readable.

use std::collections::HashMap;
use std::path::Path;

/// The fallback content type.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Extension (lower case) to content type.
#[derive(Debug, Clone, Default)]
pub struct MimeTypes {
    by_ext: HashMap<String, String>,
}

impl MimeTypes {
    /// Parses the text of a mime.types file.
    pub fn parse(text: &str) -> Self {
        let mut by_ext = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let Some(ty) = fields.next() else { continue };
            if !ty.contains('/') {
                continue;
            }
            for ext in fields {
                by_ext
                    .entry(ext.to_ascii_lowercase())
                    .or_insert_with(|| ty.to_string());
            }
        }
        Self { by_ext }
    }

    /// Loads `path`; `required` makes a missing or unreadable file an error.
    pub fn load(path: &Path, required: bool) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if required => Err(format!(
                "cannot read the mime types file {}: {e} (option mime=)",
                path.display()
            )),
            Err(_) => Ok(Self::default()),
        }
    }

    /// The content type for a file name.
    pub fn for_name(&self, name: &str) -> &str {
        name.rsplit_once('.')
            .filter(|(stem, _)| !stem.is_empty())
            .and_then(|(_, ext)| self.by_ext.get(&ext.to_ascii_lowercase()))
            .map(String::as_str)
            .unwrap_or(OCTET_STREAM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_map_to_types() {
        let m = MimeTypes::parse("# c\ntext/html html htm\napplication/json json\nimage/png PNG\n");
        assert_eq!(m.for_name("index.HTM"), "text/html");
        assert_eq!(m.for_name("a.b.json"), "application/json");
        assert_eq!(m.for_name("pic.png"), "image/png");
        assert_eq!(m.for_name("README"), OCTET_STREAM);
        assert_eq!(m.for_name(".bashrc"), OCTET_STREAM);
    }
}
