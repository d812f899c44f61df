//! Document URIs as editors send them: the local path a `file://` URI names.

/// The local path a `file://` URI names (percent-escapes decoded); `None` for other schemes.
pub fn to_path(uri: &str) -> Option<std::path::PathBuf> {
    Some(decode(uri.strip_prefix("file://")?))
}

/// The `file://` URI of an absolute path, as editors write one (bytes outside the unreserved set
/// and `/` percent-escaped).
pub fn from_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => uri.push(byte as char),
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri
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
        let odd = std::path::Path::new("/home/me/my project/100%/aé.py");
        assert_eq!(super::from_path(odd), "file:///home/me/my%20project/100%25/a%C3%A9.py");
        assert_eq!(super::to_path(&super::from_path(odd)).unwrap(), odd);
    }
}
