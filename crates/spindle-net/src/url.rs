//! `net.urlEncode` and `net.urlDecode`: percent-encoding as Lune's functions do it. Every byte but
//! ASCII letters, digits and `-_.~` is encoded; decoding turns each `%XX` back into its byte and
//! leaves the rest (a `+` too) as it is. Also what `net.request` and `net.socket` check of the
//! URLs they are given ([`bad_port`]) and show of them in errors ([`shown`]).

use hyper::Uri;
use mlua::{Lua, LuaString};
use percent_encoding::{percent_decode, percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error_at_caller;

/// The bytes that stay as they are: RFC 3986's unreserved characters.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `net.urlEncode(text, binary?)`. Without `binary`, the text must be UTF-8, as in Lune.
pub(crate) fn encode(
    lua: &Lua,
    (text, binary): (LuaString, Option<bool>),
) -> mlua::Result<LuaString> {
    let bytes = text.as_bytes();
    if !binary.unwrap_or(false) && std::str::from_utf8(&bytes).is_err() {
        return Err(error_at_caller(
            lua,
            "net.urlEncode: the text is not valid UTF-8 (pass true as argument #2 for binary data)",
        ));
    }
    let encoded: String = percent_encode(&bytes, ENCODED).collect();
    lua.create_string(encoded)
}

/// `net.urlDecode(text, binary?)`. Without `binary`, the decoded bytes must be UTF-8, as in Lune.
pub(crate) fn decode(
    lua: &Lua,
    (text, binary): (LuaString, Option<bool>),
) -> mlua::Result<LuaString> {
    let decoded: Vec<u8> = percent_decode(&text.as_bytes()).collect();
    if !binary.unwrap_or(false) && std::str::from_utf8(&decoded).is_err() {
        return Err(error_at_caller(
            lua,
            "net.urlDecode: the decoded text is not valid UTF-8 (pass true as argument #2 for binary data)",
        ));
    }
    lua.create_string(decoded)
}

/// The port written in `url`, when it is not a port number (`:99999`): the `http` crate parses
/// such a URL and then reports no port, which a connector would read as the scheme's default.
pub(crate) fn bad_port(url: &Uri) -> Option<&str> {
    let host_and_port = host_and_port(url);
    // After an IPv6 literal's `]`, if any.
    let after_host = host_and_port.rfind(']').map_or(0, |at| at + 1);
    let (_, port) = host_and_port[after_host..].rsplit_once(':')?;
    (!port.is_empty() && url.port_u16().is_none()).then_some(port)
}

/// `url` as errors show it: without its user information and its query, which may carry
/// secrets (`https://api.test/v1/items` for `https://user:pw@api.test/v1/items?token=x`).
pub(crate) fn shown(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("http");
    format!("{scheme}://{}{}", host_and_port(url), url.path())
}

/// The authority without its user information.
fn host_and_port(url: &Uri) -> &str {
    let authority = url.authority().map_or("", |a| a.as_str());
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_past_65535_is_bad_and_an_empty_one_is_the_default() {
        let port = |url: &str| bad_port(&url.parse().unwrap()).map(str::to_owned);
        assert_eq!(port("http://a.test:99999/").as_deref(), Some("99999"));
        assert_eq!(port("http://u:1@a.test:65536/").as_deref(), Some("65536"));
        assert_eq!(port("http://[::1]:70000/").as_deref(), Some("70000"));
        assert_eq!(port("http://a.test:8080/"), None);
        assert_eq!(port("http://u:99999@a.test/"), None);
        assert_eq!(port("http://[::1]/"), None);
        assert_eq!(port("http://a.test:/"), None);
    }

    #[test]
    fn errors_show_a_url_without_its_user_information_or_query() {
        let url: Uri = "https://user:pw@api.test:8443/v1/items?token=secret"
            .parse()
            .unwrap();
        assert_eq!(shown(&url), "https://api.test:8443/v1/items");
    }
}
