//! ntfy's side of the HTTP plumbing: the shared pieces come from `herald-http`; this module adds what ntfy
//! needs of its own, the token check and the RFC 2047 header encoding ntfy decodes. It sends nothing on its
//! own.

use base64::Engine as _;
pub use herald_http::{check_base_url, check_response, client, cut_bytes, encode_path_segment, send_error};

/// A token that can go in an HTTP header and an ntfy action: printable ASCII, no spaces, commas or quotes.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".to_owned());
    }
    if !token.chars().all(|c| c.is_ascii_graphic() && !matches!(c, ',' | '"' | '\'')) {
        return Err("the token must be printable ASCII without spaces, commas or quotes".to_owned());
    }
    Ok(())
}

/// A header value: as is when it is printable ASCII, else one RFC 2047 encoded word
/// (`=?UTF-8?B?...?=`), which ntfy decodes (newlines included).
pub fn header_text(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) && !text.contains("=?") {
        text.to_owned()
    } else {
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_headers_only_when_needed() {
        assert_eq!(header_text("mnist: epoch 3/10"), "mnist: epoch 3/10");
        assert_eq!(header_text("a\nb"), "=?UTF-8?B?YQpi?=");
        assert_eq!(header_text("é"), "=?UTF-8?B?w6k=?=");
    }
}
