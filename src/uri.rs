//! Document URIs as editors send them: the local path a `file://` URI names.

/// The local path a `file://` URI names (percent-escapes decoded); `None` for other schemes.
pub fn to_path(uri: &str) -> Option<std::path::PathBuf> {
    Some(decode(uri.strip_prefix("file://")?))
}

/// A URI's path part, or a part of one (a path relative to a workspace's URI), as a path:
/// percent-escapes decoded.
pub fn decode(encoded: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let encoded = encoded.as_bytes();
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        let escaped = (encoded[i] == b'%').then(|| std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()).flatten();
        match escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(byte) => {
                bytes.push(byte);
                i += 3;
            }
            None => {
                bytes.push(encoded[i]);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(bytes).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_uris_become_paths() {
        assert_eq!(
            super::to_path("file:///home/me/my%20project/a%C3%A9.py").unwrap().to_str(),
            Some("/home/me/my project/aé.py")
        );
        assert_eq!(super::to_path("file:///x/100%").unwrap().to_str(), Some("/x/100%"));
        assert_eq!(super::to_path("untitled:Untitled-1"), None);
    }
}
